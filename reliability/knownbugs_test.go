package reliability

import (
	"os"
	"testing"
)

// Known bugs in code this suite does not own: each test states the promise
// and fails until the bug is fixed. They are skipped unless MP3C_KNOWN_BUGS=1
// (`make reliability` runs them and lists them as open or fixed); when one
// passes, drop the guard. docs/reliability.md has each with its fix.

func knownBug(t *testing.T, where string) {
	t.Helper()
	if os.Getenv("MP3C_KNOWN_BUGS") == "" {
		t.Skipf("known bug in %s (MP3C_KNOWN_BUGS=1 runs it)", where)
	}
}
