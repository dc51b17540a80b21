package reliability

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"

	"mp3converter/internal/stacktest"
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

// The local stack's embedded MySQL (go-mysql-server's in-memory engine,
// internal/local/standins StartMySQL) loses writes made at the same time: 40 users
// created at once through the admin API all get 201, and about a quarter of
// them do not exist afterwards (MariaDB keeps all 40). Concurrent transactions
// each commit their own copy of the table and the last one wins.
// Fix (internal/local/standins/standins.go): run the engine's statements one at a
// time (a mutex around query execution: it is a development stand-in, where
// throughput does not matter), or say in the README that `up` without
// MYSQL_DSN is for one user at a time.
func TestKnownBugEmbeddedMySQLLosesConcurrentWrites(t *testing.T) {
	knownBug(t, "internal/local/standins: go-mysql-server loses concurrent writes")
	if os.Getenv("MYSQL_DSN") != "" {
		t.Skip("MYSQL_DSN is set: the embedded MySQL is not in use")
	}
	s := sharedSystem(t)
	prefix := "many-" + stacktest.RandomHex(3) + "-"
	var wg sync.WaitGroup
	var mu sync.Mutex
	created := 0
	for i := range 40 {
		wg.Go(func() {
			body := fmt.Sprintf(`{"email":"%s%d@example.com","password":%q}`, prefix, i, stacktest.UserPassword)
			if a := s.do("POST", "/users", s.AdminToken, strings.NewReader(body), "Content-Type", "application/json"); a.status == http.StatusCreated {
				mu.Lock()
				created++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	var users struct {
		Users []struct{ Email string }
	}
	json.Unmarshal(s.do("GET", "/users", s.AdminToken, nil).body, &users)
	stored := 0
	for _, u := range users.Users {
		if strings.HasPrefix(u.Email, prefix) {
			stored++
		}
	}
	if stored != created {
		t.Fatalf("%d users created (201), %d stored", created, stored)
	}
}
