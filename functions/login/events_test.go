package function

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// DELETE /users/{email} publishes user.deleted to K_SINK; a broker that refuses does not undo
// the deletion.
func TestDeleteUserPublishesUserDeleted(t *testing.T) {
	type received struct {
		header http.Header
		body   string
	}
	got := make(chan received, 10)
	refuse := make(chan bool, 1)
	refuse <- false
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		no := <-refuse
		refuse <- no
		if no {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		got <- received{r.Header, string(b)}
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sink.Close()
	cfg := baseConfig(testDSN(t))
	cfg["K_SINK"] = sink.URL
	f, srv := startFunction(t, cfg)
	addUser(t, f, adminEmail, true)
	addUser(t, f, bobEmail, false)
	addUser(t, f, carolEmail, false)
	admin := loginToken(t, srv.URL, adminEmail)

	var listed struct{ Users []User }
	if r := call(t, "GET", srv.URL+"/users", admin, ""); r.status != 200 || json.Unmarshal([]byte(r.body), &listed) != nil {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	var bobID int64
	for _, u := range listed.Users {
		if u.Email == bobEmail {
			bobID = u.ID
		}
	}

	before := time.Now().Add(-time.Second)
	if r := call(t, "DELETE", srv.URL+"/users/Bob@Example.com", admin, ""); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	e := <-got
	at, err := time.Parse(time.RFC3339Nano, e.header.Get("Ce-Time"))
	if e.header.Get("Ce-Type") != "dev.mp3converter.user.deleted" || e.header.Get("Ce-Source") != "/functions/login" ||
		e.header.Get("Ce-Specversion") != "1.0" || e.header.Get("Ce-Id") == "" || e.header.Get("Ce-Subject") != bobEmail ||
		err != nil || at.Before(before) || bobID == 0 || e.body != fmt.Sprintf(`{"user_id":"%d","username":"%s"}`, bobID, bobEmail) {
		t.Fatalf("event %v %s (%v)", e.header, e.body, err)
	}

	<-refuse
	refuse <- true
	if r := call(t, "DELETE", srv.URL+"/users/"+carolEmail, admin, ""); r.status != 204 {
		t.Fatalf("delete with the broker down: %d %s", r.status, r.body)
	}
	if r := call(t, "DELETE", srv.URL+"/users/"+carolEmail, admin, ""); r.status != 404 {
		t.Fatalf("carol still there: %d", r.status)
	}
	if len(got) != 0 {
		t.Fatal("an event through a refusing broker")
	}
}
