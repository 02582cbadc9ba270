package mutation

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/pyexec/pyexec/internal/settings"
)

// Bounds of the uids of a pod.
const (
	// MaxUID is the largest uid the API server accepts in a securityContext.
	MaxUID = math.MaxInt32
	// MaxUserNamespaceUID is the largest uid of a pod with hostUsers: false: the kubelet maps
	// 65536 uids into its user namespace, 0 to 65535.
	MaxUserNamespaceUID = 65535
)

// Ranges the uids of a pod are drawn from.
//
// Outside a user namespace the uids are the node's: two pods that draw the same uid share
// RLIMIT_NPROC's count and may signal each other's processes. n pods on a node draw 2n uids out
// of N; the chance that any two of them meet is about (2n)²/(2N). For the kubelet's default of
// at most 110 pods a node and DefaultUIDRange (N = 999,900,000) that is about 2.4e-5 for a full
// node. Pinned uids (AnnotationServerUID, AnnotationRunnerUID) are for clusters that give each
// namespace its own range.
//
// A pod with hostUsers: false has a user namespace whose uids map to a host range that no other
// pod has: its uids cannot meet another pod's, and they must lie in the 65536 that are mapped.
var (
	// DefaultUIDRange is the range when Defaults.UIDRange is zero (the injector's --uid-range).
	DefaultUIDRange = mustParseUIDRange(settings.DefaultUIDRange)
	// UserNamespaceUIDRange is the range of a pod with hostUsers: false: below the system
	// uids of common images (1000s), and without 65534 (nobody) and 65535.
	UserNamespaceUIDRange = UIDRange{Min: 10000, Max: 65533}
)

// UIDRange is a range of uids, both ends included. Its text form is MIN-MAX; it is a flag value
// through encoding.TextMarshaler and TextUnmarshaler.
type UIDRange struct {
	Min, Max int64
}

// ParseUIDRange parses MIN-MAX and checks it with Validate.
func ParseUIDRange(s string) (UIDRange, error) {
	lo, hi, ok := strings.Cut(strings.TrimSpace(s), "-")
	minUID, err1 := strconv.ParseInt(lo, 10, 64)
	maxUID, err2 := strconv.ParseInt(hi, 10, 64)
	if !ok || err1 != nil || err2 != nil {
		return UIDRange{}, fmt.Errorf("uid range %q: want MIN-MAX, two whole numbers such as %s", s, settings.DefaultUIDRange)
	}
	r := UIDRange{Min: minUID, Max: maxUID}
	if err := r.Validate(); err != nil {
		return UIDRange{}, err
	}
	return r, nil
}

func mustParseUIDRange(s string) UIDRange {
	r, err := ParseUIDRange(s)
	if err != nil {
		panic(err)
	}
	return r
}

// Validate checks that the range holds two uids or more (a pod needs two distinct ones), none
// of them 0 (root) or above MaxUID.
func (r UIDRange) Validate() error {
	if r.Min < 1 || r.Max > MaxUID || r.Min >= r.Max {
		return fmt.Errorf("uid range %s: want MIN-MAX with 1 <= MIN < MAX <= %d", r, MaxUID)
	}
	return nil
}

// String is MIN-MAX.
func (r UIDRange) String() string {
	return fmt.Sprintf("%d-%d", r.Min, r.Max)
}

// MarshalText is String.
func (r UIDRange) MarshalText() ([]byte, error) {
	return []byte(r.String()), nil
}

// UnmarshalText is ParseUIDRange.
func (r *UIDRange) UnmarshalText(text []byte) error {
	parsed, err := ParseUIDRange(string(text))
	if err != nil {
		return err
	}
	*r = parsed
	return nil
}

// contains says whether uid is in the range.
func (r UIDRange) contains(uid int64) bool {
	return r.Min <= uid && uid <= r.Max
}

// drawUIDs returns the server's and the runner's uid: each one given (above zero) as it is,
// each one not given (0) drawn from rng with src, never equal to the other. The given ones
// must differ and rng must hold two uids or more (Validate); a draw reads src once and
// cannot loop.
func drawUIDs(src io.Reader, rng UIDRange, server, runner int64) (int64, int64, error) {
	var err error
	if server == 0 {
		if server, err = drawUID(src, rng, runner); err != nil {
			return 0, 0, err
		}
	}
	if runner == 0 {
		if runner, err = drawUID(src, rng, server); err != nil {
			return 0, 0, err
		}
	}
	return server, runner, nil
}

// drawUID draws a uid of rng other than not (0 excludes nothing), evenly but for the bias of
// a 64-bit number modulo a range of at most 2³¹ uids, below 2⁻³²: when not is in the range, it
// draws from the range's other uids, counting past not.
func drawUID(src io.Reader, rng UIDRange, not int64) (int64, error) {
	n := uint64(rng.Max - rng.Min + 1)
	skip := rng.contains(not)
	if skip {
		n--
	}
	var b [8]byte
	if _, err := io.ReadFull(src, b[:]); err != nil {
		return 0, fmt.Errorf("drawing a uid: %w", err)
	}
	uid := rng.Min + int64(binary.BigEndian.Uint64(b[:])%n)
	if skip && uid >= not {
		uid++
	}
	return uid, nil
}
