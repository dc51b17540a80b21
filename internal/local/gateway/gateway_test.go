package gateway

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func backend(t *testing.T, name string) *url.URL {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		io.WriteString(w, name+" "+r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("X-Forwarded-Host"))
		if n > 0 {
			io.WriteString(w, " body")
		}
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	return u
}

func get(t *testing.T, method, u string, body io.Reader) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u, body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRoutesByPath(t *testing.T) {
	login, download := backend(t, "login"), backend(t, "download")
	// A function that is not listening: its port was taken and released.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead, _ := url.Parse("http://" + ln.Addr().String())
	ln.Close()

	gw := httptest.NewServer(New([]Route{
		{Pattern: "/login", Function: "login", Target: login},
		{Pattern: "/jobs/", Function: "download", Target: download},
		{Pattern: "/upload", Function: "upload", Target: dead},
	}, slog.Default()))
	defer gw.Close()
	host := strings.TrimPrefix(gw.URL, "http://")

	cases := []struct {
		method, path string
		body         io.Reader
		status       int
		want         string
	}{
		{"POST", "/login", strings.NewReader("x"), 200, "login POST /login " + host + " body"},
		{"GET", "/jobs/abc?x=1", nil, 200, "download GET /jobs/abc?x=1 " + host},
		{"GET", "/nowhere", nil, 404, `"error":"no such path"`},
		{"POST", "/upload", strings.NewReader("x"), 502, `"error":"upload is unavailable, try again"`},
	}
	for _, c := range cases {
		status, body := get(t, c.method, gw.URL+c.path, c.body)
		if status != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s %s = %d %q, want %d containing %q", c.method, c.path, status, body, c.status, c.want)
		}
		if status >= 400 && !json.Valid([]byte(body)) {
			t.Errorf("%s %s: error body is not JSON: %q", c.method, c.path, body)
		}
	}
}
