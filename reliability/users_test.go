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

// Users created at the same instant are all kept: 40 users created at once
// through the admin API all get 201 and all exist afterwards. (It was a known
// bug while `up` ran go-mysql-server's in-memory engine, whose concurrent
// transactions each committed their own copy of the table; `up` now runs a
// private MariaDB, and so does this suite. go-mysql-server stays only as the
// fallback where MariaDB is not installed, with a warning.)
func TestConcurrentSignUpsAreAllKept(t *testing.T) {
	r := record(t, "users: 40 created at once through the admin API are all kept (the default private MariaDB)")
	r.Runs = 40
	s := sharedSystem(t)
	if !s.mariadb && os.Getenv("MYSQL_DSN") == "" {
		t.Skip("MariaDB is not installed: the stack falls back to go-mysql-server, which loses concurrent writes")
	}
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
	if created != 40 {
		r.Failures += 40 - created
		t.Errorf("%d of 40 users created (201)", created)
	}
	if stored != created {
		r.Lost += created - stored
		t.Fatalf("%d users created (201), %d stored", created, stored)
	}
}
