package reliability

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	login "mp3converter/functions/login"
	"mp3converter/internal/stacktest"
)

// A user cannot see, download or learn the existence of another user's job
// or MP3: what they get for it is byte for byte what they get for an id that
// does not exist. An admin sees everything. (The video itself is never served
// to anyone: there is no endpoint for it.)
func TestOthersJobsAndMP3sLookMissing(t *testing.T) {
	r := record(t, "access: another user's job and MP3 look missing; admin sees them")
	s := sharedSystem(t)
	suffix := stacktest.RandomHex(3)
	alice := s.AddUser(t, "alice-"+suffix+"@example.com")
	bob := s.AddUser(t, "bob-"+suffix+"@example.com")

	fid := s.Upload(t, alice, clip(t, 2), "alice-"+suffix+".mp4")
	if job := s.WaitJob(t, alice, fid, 2*time.Minute); job.State != "done" {
		t.Fatalf("alice's job = %v", job)
	}
	missing := bson.NewObjectID().Hex()

	for _, probe := range []struct{ method, path string }{
		{"GET", "/jobs/%s"},
		{"GET", "/download?fid=%s"},
		{"HEAD", "/download?fid=%s"},
		{"GET", "/download?fid=%s&x=1"},
	} {
		r.Runs++
		existing := s.do(probe.method, strings.Replace(probe.path, "%s", fid, 1), bob, nil)
		absent := s.do(probe.method, strings.Replace(probe.path, "%s", missing, 1), bob, nil)
		if existing.status != http.StatusNotFound || !sameAnswer(existing, absent) {
			r.Failures++
			t.Errorf("%s %s as a stranger: %s %v\nfor a missing id: %s %v", probe.method, probe.path,
				existing, existing.header, absent, absent.header)
		}
		// The owner and an admin do get it.
		for who, token := range map[string]string{"owner": alice, "admin": s.AdminToken} {
			r.Runs++
			if a := s.do(probe.method, strings.Replace(probe.path, "%s", fid, 1), token, nil); a.status != http.StatusOK {
				r.Failures++
				t.Errorf("%s %s as %s: %s", probe.method, probe.path, who, a)
			}
		}
	}

	// Lists: bob's own jobs only, even when asking for everyone's.
	for _, path := range []string{"/jobs", "/jobs?all=true", "/jobs?limit=100&all=1"} {
		r.Runs++
		if a := s.do("GET", path, bob, nil); a.status != http.StatusOK || bytes.Contains(a.body, []byte(fid)) {
			r.Failures++
			t.Errorf("GET %s as bob: %s", path, a)
		}
	}
	r.Runs++
	if a := s.do("GET", "/jobs?all=true&limit=100", s.AdminToken, nil); !bytes.Contains(a.body, []byte(fid)) {
		r.Failures++
		t.Errorf("admin's /jobs?all=true does not list alice's job: %s", a)
	}
	r.figure("%d probes as stranger, owner and admin over /jobs/{id}, /download?fid= (GET, HEAD) and /jobs lists", r.Runs)
}

// sameAnswer: same status, same body, and the same headers that could tell
// the two apart.
func sameAnswer(a, b answer) bool {
	if a.status != b.status || !bytes.Equal(a.body, b.body) {
		return false
	}
	for _, h := range []string{"Content-Type", "Content-Length", "Cache-Control", "Vary", "ETag", "Content-Range", "WWW-Authenticate"} {
		if a.header.Get(h) != b.header.Get(h) {
			return false
		}
	}
	return true
}

// The tokens of a deleted user stop working: at once at login's admin API, which
// asks the user store each time; within validate's user cache (5 s) at validate;
// and within that plus VALIDATE_CACHE_TTL where upload and download cache
// validate's answers (1 s here, 30 s by default).
func TestDeletedUsersTokensStopWorking(t *testing.T) {
	r := record(t, "access: a deleted user's token stops working within VALIDATE_CACHE_TTL")
	s := sharedSystem(t)
	email := "carol-" + stacktest.RandomHex(3) + "@example.com"
	carol := s.AddUser(t, email)
	if a := s.do("GET", "/jobs", carol, nil); a.status != http.StatusOK { // now cached by download
		t.Fatalf("carol's /jobs before: %s", a)
	}
	if a := s.do("DELETE", "/users/"+email, s.AdminToken, nil); a.status != http.StatusNoContent {
		t.Fatalf("deleting carol: %s", a)
	}
	deleted := time.Now()

	r.Runs++
	if a := s.do("PUT", "/users/"+email+"/password", carol, strings.NewReader(`{"password":"another password"}`)); a.status != http.StatusUnauthorized {
		r.Failures++
		t.Errorf("login's admin API after the deletion: %s", a)
	}

	// validate: 401 once its cached row of carol is over (functions/validate's userCacheTTL);
	// download and upload: once their cache entry of validate's answer is over too.
	const userCacheTTL = 5 * time.Second
	ttl, _ := time.ParseDuration(sharedCacheTTL)
	for _, req := range []struct {
		method, path string
		bound        time.Duration
	}{{"POST", "/validate", userCacheTTL}, {"GET", "/jobs", userCacheTTL + ttl}, {"POST", "/upload", userCacheTTL + ttl}} {
		r.Runs++
		var last answer
		for deadline := deleted.Add(req.bound + 10*time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if last = s.do(req.method, req.path, carol, strings.NewReader("x"), "Content-Type", "video/mp4"); last.status == http.StatusUnauthorized {
				break
			}
		}
		if last.status != http.StatusUnauthorized || !strings.Contains(last.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			r.Failures++
			t.Errorf("%s %s with a deleted user's token, %s after the deletion: %s", req.method, req.path, req.bound+10*time.Second, last)
			continue
		}
		r.figure("%s %s first refused %s after the deletion, asked every 100 ms (bound %s plus a request: validate's user cache 5 s, VALIDATE_CACHE_TTL=%s)", req.method, req.path,
			time.Since(deleted).Round(100*time.Millisecond), req.bound, sharedCacheTTL)
	}
}

// A user deleted and made again under the same address is a new account: it sees none of
// the old one's files (issue 17). The deletion here is the one that publishes no
// user.deleted (`mp3converter user delete` straight in MySQL), so the sweep never removes
// the old files and only ownership by id keeps them out of the new account's reach; by
// address, the new account would list, read and download them all.
func TestNewAccountAtADeletedUsersAddressSeesNothingOld(t *testing.T) {
	r := record(t, "access: a new account at a deleted user's address sees none of the old one's files")
	s := sharedSystem(t)
	email := "reborn-" + stacktest.RandomHex(3) + "@example.com"
	old := s.AddUser(t, email)
	fid := s.Upload(t, old, clip(t, 2), "old.mp4")
	if job := s.WaitJob(t, old, fid, 2*time.Minute); job.State != "done" {
		t.Fatalf("the old account's job = %v", job)
	}

	db, err := login.OpenDB(s.mysqlDirect)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := login.DeleteUser(context.Background(), db, email); err != nil {
		t.Fatal("deleting the user in MySQL:", err)
	}
	reborn := s.AddUser(t, email)

	missing := s.do("GET", "/jobs/"+bson.NewObjectID().Hex(), reborn, nil)
	for _, path := range []string{"/jobs/" + fid, "/download?fid=" + fid} {
		r.Runs++
		if a := s.do("GET", path, reborn, nil); a.status != http.StatusNotFound || !bytes.Equal(a.body, missing.body) {
			r.Failures++
			t.Errorf("GET %s as the new account: %s, want the 404 of a missing id", path, a)
		}
	}
	r.Runs++
	list := s.do("GET", "/jobs?limit=100", reborn, nil)
	if list.status != http.StatusOK || bytes.Contains(list.body, []byte(fid)) {
		r.Failures++
		t.Errorf("GET /jobs as the new account: %s, want a list without %s", list, fid)
	}
	r.Runs++
	if a := s.do("GET", "/jobs/"+fid, s.AdminToken, nil); a.status != http.StatusOK {
		r.Lost++
		t.Errorf("the old file is gone for the admin too: %s", a)
	}
}
