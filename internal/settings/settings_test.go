package settings

import "testing"

func TestWholeCPUs(t *testing.T) {
	for limit, want := range map[float64]int{0: 0, -1: 0, 0.5: 1, 1: 1, 1.0000000001: 1, 1.5: 2, 2: 2} {
		if got := WholeCPUs(limit); got != want {
			t.Errorf("WholeCPUs(%v) = %d, want %d", limit, got, want)
		}
	}
}
