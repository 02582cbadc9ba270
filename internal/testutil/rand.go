package testutil

// SameBytes is a reader of "randomness" for tests that must not depend on chance or on the
// order of draws: every Read fills p with the same bytes (p[i] = 0x5a + 37*i), whatever was
// read before. internal/mutation's golden files are made with it, so that the uids drawn for a pod
// are the same offline and through the webhook, on the first injection and on any later one.
type SameBytes struct{}

// Read fills p and never fails.
func (SameBytes) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(0x5a + 37*i)
	}
	return len(p), nil
}
