package executor

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// firstSorted keeps the first max by key, however many it is given, and says when it dropped
// some.
func TestFirstSortedKeepsTheFirst(t *testing.T) {
	for _, tt := range []struct {
		max, n  int
		dropped bool
	}{{0, 0, false}, {0, 3, true}, {3, 3, false}, {3, 4, true}, {5, 1000, true}, {1000, 999, false}} {
		f := newFirstSorted(tt.max, func(s string) string { return s })
		for i := range tt.n {
			f.add(fmt.Sprintf("%05d", (i*7919)%tt.n)) // every number below n once, shuffled
			if len(f.items) > 2*tt.max {
				t.Fatalf("max %d: holds %d", tt.max, len(f.items))
			}
		}
		got, dropped := f.result()
		if len(got) != min(tt.max, tt.n) || dropped != tt.dropped {
			t.Errorf("max %d of %d: %d kept, dropped %v", tt.max, tt.n, len(got), dropped)
			continue
		}
		for i, s := range got {
			if s != fmt.Sprintf("%05d", i) {
				t.Errorf("max %d of %d: %v", tt.max, tt.n, got)
				break
			}
		}
	}
}

// A session's call stamps only the files changed just before it, however many files the
// session holds, and still tells what the call changed: a file older than stampWindow that it
// rewrote, a file it made; not the recent file it left alone.
func TestCallStampsHoldOnlyRecentFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(p, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, p), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		write(fmt.Sprintf("old%03d.txt", i), "old")
	}
	time.Sleep(stampWindow + 100*time.Millisecond) // a loaded machine only makes them older
	write("recent.txt", "recent")
	s := stampFiles(dir)
	if _, ok := s.files["recent.txt"]; len(s.files) != 1 || !ok {
		t.Fatalf("stamped %d files; want recent.txt alone", len(s.files))
	}
	write("old007.txt", "rewritten")
	write("new.txt", "new")
	got, truncated := collectFilesSince(dir, s, 1<<20, 10, 1<<20, nil)
	var paths []string
	for _, f := range got {
		paths = append(paths, f.Path)
	}
	if fmt.Sprint(paths) != "[new.txt old007.txt]" || truncated {
		t.Errorf("the call changed %v, truncated %v; want [new.txt old007.txt]", paths, truncated)
	}
}

// Listings walk maxConcurrentListings at a time; one more waits, and past its deadline it does
// not walk at all.
func TestListingsWalkAFewAtATime(t *testing.T) {
	s := &Spawn{listings: make(chan struct{}, maxConcurrentListings)}
	var releases []func()
	for i := range maxConcurrentListings {
		release, ok := s.listing(time.Now().Add(time.Minute))
		if !ok {
			t.Fatalf("listing %d of %d may not walk", i+1, maxConcurrentListings)
		}
		releases = append(releases, release)
	}
	if _, ok := s.listing(time.Now().Add(50 * time.Millisecond)); ok {
		t.Fatalf("listing %d walks beside %d others", maxConcurrentListings+1, maxConcurrentListings)
	}
	releases[0]()
	if release, ok := s.listing(time.Now().Add(time.Minute)); !ok {
		t.Fatal("a listing may not walk once one ended")
	} else {
		release()
	}
}

// EmptyDir removes every entry, however many, read a batch at a time while it removes them.
func TestEmptyDirRemovesEveryEntry(t *testing.T) {
	dir := t.TempDir()
	for i := range 5*walkBatch + 7 {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d", i)), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "d", "e"), 0o755); err != nil {
		t.Fatal(err)
	}
	EmptyDir(dir)
	if names, err := os.ReadDir(dir); err != nil || len(names) != 0 {
		t.Errorf("%d entries left, %v", len(names), err)
	}
}
