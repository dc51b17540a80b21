package function

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// backend is a stand-in for one function: it answers with its name, the method and the URI
// it received, or runs handle when given.
func backend(t *testing.T, name string, handle http.HandlerFunc) string {
	t.Helper()
	if handle == nil {
		handle = func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "%s %s %s %d", name, r.Method, r.URL.RequestURI(), n)
		}
	}
	srv := httptest.NewServer(handle)
	t.Cleanup(srv.Close)
	return srv.URL
}

// startWeb starts web in front of the given backends (function name to URL; the missing ones
// get the default backend) and returns its URL.
func startWeb(t *testing.T, backends map[string]string) string {
	t.Helper()
	cfg := map[string]string{}
	for fn, setting := range Upstreams {
		u := backends[fn]
		if u == "" {
			u = backend(t, fn, nil)
		}
		cfg[setting] = u
	}
	f := New()
	if err := f.Start(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(f.Handle))
	t.Cleanup(srv.Close)
	return srv.URL
}

func do(t *testing.T, method, url string, body io.Reader, header ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestRoutesGoToTheirFunctions(t *testing.T) {
	// A function that is not listening: its port was taken and released.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "http://" + ln.Addr().String()
	ln.Close()
	web := startWeb(t, map[string]string{"validate": dead})

	cases := []struct {
		method, path, body string
		status             int
		want               string
	}{
		{"POST", "/login", "x", 200, "login POST /login 1"},
		{"GET", "/users", "", 200, "login GET /users 0"},
		{"DELETE", "/users/a@example.com", "", 200, "login DELETE /users/a@example.com 0"},
		{"POST", "/upload?filename=a.mp4", "abc", 200, "upload POST /upload?filename=a.mp4 3"},
		{"PUT", "/upload/abc", "", 200, "upload PUT /upload/abc 0"},
		{"GET", "/download?fid=1", "", 200, "download GET /download?fid=1 0"},
		{"GET", "/jobs?before=x", "", 200, "download GET /jobs?before=x 0"},
		{"GET", "/jobs/abc", "", 200, "download GET /jobs/abc 0"},
		{"GET", "/.well-known/jwks.json", "", 502, `"error":"validate is unavailable, try again"`},
		{"POST", "/validate", "", 502, `"error":"validate is unavailable, try again"`},
		{"GET", "/nowhere", "", 404, `"error":"no such path"`},
		{"POST", "/", "", 405, `"error":"method not allowed"`},
	}
	for _, c := range cases {
		resp, body := do(t, c.method, web+c.path, strings.NewReader(c.body))
		if resp.StatusCode != c.status || !strings.Contains(body, c.want) {
			t.Errorf("%s %s = %d %q, want %d containing %q", c.method, c.path, resp.StatusCode, body, c.status, c.want)
		}
		if resp.StatusCode >= 400 && !json.Valid([]byte(body)) {
			t.Errorf("%s %s: error body is not JSON: %q", c.method, c.path, body)
		}
	}
}

func TestAppIsServedWithSecurityHeaders(t *testing.T) {
	web := startWeb(t, nil)
	for path, wantType := range map[string]string{
		"/":           "text/html",
		"/app.js":     "text/javascript",
		"/app.css":    "text/css",
		"/api.js":     "text/javascript",
		"/index.html": "", // redirected to / by the file server
	} {
		resp, body := do(t, "GET", web+path, nil)
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), wantType) || body == "" {
			t.Errorf("GET %s = %d %s (%d bytes), want 200 %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body), wantType)
		}
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'self'", "script-src 'self'", "frame-ancestors 'none'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("GET %s: Content-Security-Policy %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") {
			t.Errorf("GET %s: Content-Security-Policy %q allows inline code", path, csp)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("GET %s: headers %v, want nosniff and Referrer-Policy no-referrer", path, resp.Header)
		}
	}
	// No inline script or style, and nothing from another origin, in the page itself.
	_, page := do(t, "GET", web+"/", nil)
	for _, bad := range []string{"<script>", "style=", "onclick", "http://", "https://"} {
		if strings.Contains(page, bad) {
			t.Errorf("index.html contains %q", bad)
		}
	}
}

// An upload reaches the function while the client is still sending it.
func TestUploadStreamsWithoutBuffering(t *testing.T) {
	firstChunk := make(chan string, 1)
	upload := backend(t, "upload", func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 5)
		io.ReadFull(r.Body, b)
		firstChunk <- string(b)
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "rest %d", n)
	})
	web := startWeb(t, map[string]string{"upload": upload})

	pr, pw := io.Pipe()
	done := make(chan string, 1)
	go func() {
		_, body := do(t, "POST", web+"/upload", pr)
		done <- body
	}()
	pw.Write([]byte("first"))
	select {
	case got := <-firstChunk:
		if got != "first" {
			t.Fatalf("upload got %q first", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the first chunk did not reach upload while the client was still sending")
	}
	pw.Write([]byte(strings.Repeat("x", 1000)))
	pw.Close()
	if body := <-done; body != "rest 1000" {
		t.Fatalf("answer %q, want rest 1000", body)
	}
}

// A download reaches the client while the function is still sending it.
func TestDownloadStreamsWithoutBuffering(t *testing.T) {
	release := make(chan struct{})
	download := backend(t, "download", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "audio/mpeg")
		io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "rest")
	})
	web := startWeb(t, map[string]string{"download": download})

	resp, err := http.Get(web + "/download?fid=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := make([]byte, 5)
	if _, err := io.ReadFull(resp.Body, b); err != nil || string(b) != "first" {
		t.Fatalf("first chunk %q, %v", b, err)
	}
	close(release)
	if rest, _ := io.ReadAll(resp.Body); string(rest) != "rest" {
		t.Fatalf("rest %q", rest)
	}
}

func TestHeadersPassThrough(t *testing.T) {
	var seen http.Header
	download := backend(t, "download", func(w http.ResponseWriter, r *http.Request) {
		seen = r.Header.Clone()
		w.Header().Set("ETag", `"abc"`)
		w.Header().Set("Content-Disposition", `attachment; filename="song.mp3"`)
		w.Header().Set("Content-Range", "bytes 0-1/10")
		w.Header().Set("Accept-Ranges", "bytes")
		w.WriteHeader(http.StatusPartialContent)
		io.WriteString(w, "ab")
	})
	web := startWeb(t, map[string]string{"download": download})

	resp, body := do(t, "GET", web+"/download?fid=1", nil,
		"Range", "bytes=0-1", "If-None-Match", `"old"`, "Authorization", "Bearer t", "X-Forwarded-For", "203.0.113.9")
	if resp.StatusCode != http.StatusPartialContent || body != "ab" {
		t.Fatalf("answer %d %q, want 206 ab", resp.StatusCode, body)
	}
	for h, want := range map[string]string{"ETag": `"abc"`, "Content-Disposition": `attachment; filename="song.mp3"`, "Content-Range": "bytes 0-1/10", "Accept-Ranges": "bytes"} {
		if got := resp.Header.Get(h); got != want {
			t.Errorf("answer's %s = %q, want %q", h, got, want)
		}
	}
	for h, want := range map[string]string{
		"Range": "bytes=0-1", "If-None-Match": `"old"`, "Authorization": "Bearer t",
		"X-Forwarded-For": "203.0.113.9, 127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": strings.TrimPrefix(web, "http://"),
	} {
		if got := seen.Get(h); got != want {
			t.Errorf("download saw %s = %q, want %q", h, got, want)
		}
	}
}

// An answer the function gives before it has read the body reaches a client that is still
// sending it, at once: refused before any byte was read (upload's 401, with Connection:
// close), or after some (upload's 408 when UPLOAD_TIMEOUT cuts a trickle off).
func TestEarlyAnswerReachesTricklingClient(t *testing.T) {
	for _, c := range []struct {
		name     string
		read     int64
		status   int
		hasClose bool
	}{
		{"refused before reading", 0, http.StatusUnauthorized, true},
		{"cut off after some bytes", 3, http.StatusRequestTimeout, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			upload := backend(t, "upload", func(w http.ResponseWriter, r *http.Request) {
				io.CopyN(io.Discard, r.Body, c.read)
				if c.hasClose {
					w.Header().Set("Connection", "close")
				}
				w.WriteHeader(c.status)
				io.WriteString(w, `{"error":"no"}`)
			})
			web := startWeb(t, map[string]string{"upload": upload})

			conn, err := net.Dial("tcp", strings.TrimPrefix(web, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(20 * time.Second)) // the test's bound, not a threshold
			// A 100 MB body of which only the first bytes are ever sent.
			fmt.Fprintf(conn, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\nContent-Length: 100000000\r\n\r\nabcdef")
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no answer while the body is unsent: %v", err)
			}
			if resp.StatusCode != c.status || !resp.Close {
				t.Fatalf("answer %d (close %v), want %d with Connection: close", resp.StatusCode, resp.Close, c.status)
			}
		})
	}
}

func TestNotStartedAndBadConfiguration(t *testing.T) {
	f := New()
	rec := httptest.NewRecorder()
	f.Handle(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("before Start: %d, want 503", rec.Code)
	}
	if ok, _ := f.Ready(context.Background()); ok {
		t.Error("ready before Start")
	}
	cfg := map[string]string{"LOGIN_URL": "http://a", "UPLOAD_URL": "http://b", "DOWNLOAD_URL": "http://c", "VALIDATE_URL": "http://d/validate"}
	if err := f.Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "VALIDATE_URL") {
		t.Errorf("Start with a path in VALIDATE_URL: %v, want an error naming it", err)
	}
	delete(cfg, "LOGIN_URL")
	if err := f.Start(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "LOGIN_URL is not set") {
		t.Errorf("Start without LOGIN_URL: %v", err)
	}
}

// A wrong password asked for by the web app must not open the browser's own password dialog.
func TestNoPasswordDialogForTheApp(t *testing.T) {
	login := backend(t, "login", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="mp3converter"`)
		w.WriteHeader(http.StatusUnauthorized)
	})
	web := startWeb(t, map[string]string{"login": login})
	if resp, _ := do(t, "POST", web+"/login", nil); resp.Header.Get("WWW-Authenticate") == "" {
		t.Error("curl's answer lost WWW-Authenticate")
	}
	if resp, _ := do(t, "POST", web+"/login", nil, "X-Requested-With", "XMLHttpRequest"); resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != "" {
		t.Errorf("the app's answer: %d, WWW-Authenticate %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
}
