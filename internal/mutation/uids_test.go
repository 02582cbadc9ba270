package mutation

import (
	"crypto/rand"
	"encoding/binary"
	mathrand "math/rand/v2"
	"testing"
)

func TestParseUIDRange(t *testing.T) {
	for in, want := range map[string]UIDRange{
		"100000-999999999": {100000, 999999999},
		" 1-2 ":            {1, 2},
		"10000-2147483647": {10000, MaxUID},
	} {
		got, err := ParseUIDRange(in)
		if err != nil || got != want {
			t.Errorf("ParseUIDRange(%q) = %v, %v; want %v", in, got, err, want)
		}
		if text, _ := got.MarshalText(); err == nil && string(text) != want.String() {
			t.Errorf("MarshalText() = %q, want %q", text, want)
		}
	}
	for in, why := range map[string]string{
		"":                       "empty",
		"100000":                 "one number",
		"100000-":                "no maximum",
		"-100":                   "no minimum",
		"0-1000":                 "root in the range",
		"1000-1000":              "one uid: a pod needs two",
		"2000-1000":              "upside down",
		"100000-2147483648":      "past the API server's bound",
		"1e5-2e5":                "not whole numbers",
		"100000 - 200000":        "blanks inside",
		"100000-200000-300000":   "three numbers",
		"100000:200000":          "another separator",
		"99999999999999999999-1": "out of int64",
	} {
		if r, err := ParseUIDRange(in); err == nil {
			t.Errorf("ParseUIDRange(%q) = %v; want an error (%s)", in, r, why)
		}
		var r UIDRange
		if err := r.UnmarshalText([]byte(in)); err == nil || r != (UIDRange{}) {
			t.Errorf("UnmarshalText(%q) = %v, %v; want an error and no change (%s)", in, r, err, why)
		}
	}
	if DefaultUIDRange != (UIDRange{100000, 999999999}) || UserNamespaceUIDRange.Validate() != nil || UserNamespaceUIDRange.Max > MaxUserNamespaceUID {
		t.Errorf("DefaultUIDRange %v, UserNamespaceUIDRange %v", DefaultUIDRange, UserNamespaceUIDRange)
	}
}

// fixedBytes reads v as the 8 bytes of one draw.
type fixedBytes uint64

func (v fixedBytes) Read(p []byte) (int, error) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	return copy(p, b[:]), nil
}

// TestDrawUID draws every value of a small range, with and without a uid to leave out: each
// draw is in the range and never the one left out, and every other uid can come.
func TestDrawUID(t *testing.T) {
	rng := UIDRange{Min: 5, Max: 8}
	for _, not := range []int64{0, 4, 5, 6, 8, 9} {
		seen := map[int64]bool{}
		for v := range uint64(64) {
			uid, err := drawUID(fixedBytes(v), rng, not)
			if err != nil {
				t.Fatal(err)
			}
			if !rng.contains(uid) || uid == not {
				t.Fatalf("drawUID(%d, %v, not %d) = %d", v, rng, not, uid)
			}
			seen[uid] = true
		}
		want := 4
		if rng.contains(not) {
			want = 3
		}
		if len(seen) != want {
			t.Errorf("not %d: drew %v, want each of the %d other uids", not, seen, want)
		}
	}
	// The largest draw of the largest range.
	if uid, _ := drawUID(fixedBytes(^uint64(0)), UIDRange{1, MaxUID}, MaxUID); uid < 1 || uid >= MaxUID {
		t.Errorf("drawUID(max) = %d", uid)
	}
}

// TestDrawUIDsSpread draws from a range of three uids many times: the server's uid is each of
// them about a third of the time, and the runner's never equals it.
func TestDrawUIDsSpread(t *testing.T) {
	src := mathrand.NewChaCha8([32]byte{1})
	rng := UIDRange{Min: 100, Max: 102}
	counts := map[int64]int{}
	const n = 30000
	for range n {
		s, r, err := drawUIDs(src, rng, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if s == r || !rng.contains(s) || !rng.contains(r) {
			t.Fatalf("drew %d and %d from %v", s, r, rng)
		}
		counts[s]++
	}
	for uid := rng.Min; uid <= rng.Max; uid++ {
		if c := counts[uid]; c < n/3-600 || c > n/3+600 {
			t.Errorf("uid %d drawn %d times of %d, want about %d: %v", uid, c, n, n/3, counts)
		}
	}
}

// TestDrawUIDsCryptoRand: with the real source, the default range gives distinct uids in it,
// and pinned ones are kept.
func TestDrawUIDsCryptoRand(t *testing.T) {
	seen := map[int64]bool{}
	for range 100 {
		s, r, err := drawUIDs(rand.Reader, DefaultUIDRange, 0, 0)
		if err != nil || s == r || !DefaultUIDRange.contains(s) || !DefaultUIDRange.contains(r) {
			t.Fatalf("drawUIDs() = %d, %d, %v", s, r, err)
		}
		seen[s], seen[r] = true, true
	}
	if len(seen) < 190 {
		t.Errorf("200 draws from %v gave only %d distinct uids", DefaultUIDRange, len(seen))
	}
	if s, r, err := drawUIDs(rand.Reader, DefaultUIDRange, 1000, 0); s != 1000 || r == 1000 || err != nil {
		t.Errorf("drawUIDs(server 1000) = %d, %d, %v", s, r, err)
	}
	if s, r, err := drawUIDs(rand.Reader, DefaultUIDRange, 7, 8); s != 7 || r != 8 || err != nil {
		t.Errorf("drawUIDs(7, 8) = %d, %d, %v", s, r, err)
	}
}
