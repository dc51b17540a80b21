package reliability

import (
	"bufio"
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"mp3converter/internal/stacktest"
)

// Bad input the function tests do not already cover, sent to the whole
// system through the front door (web). Each case: the right status, a JSON error
// message, and nothing left behind in storage. docs/reliability.md maps every
// case of the issue to its test, here or in functions/*.

// SQL metacharacters and 10 KB strings in Basic auth: 401 like any wrong
// password, and the users table intact.
func TestLoginBadCredentials(t *testing.T) {
	r := record(t, "bad input: SQL metacharacters and 10 KB strings in Basic auth")
	s := sharedSystem(t)
	email := "dave-" + stacktest.RandomHex(3) + "@example.com"
	s.AddUser(t, email)
	usersBefore := s.do("GET", "/users", s.AdminToken, nil)

	long := strings.Repeat("a", 10<<10)
	cases := []struct{ email, password string }{
		{"' OR '1'='1", "' OR '1'='1"},
		{email + "' --", stacktest.UserPassword},
		{email + "'; DROP TABLE users; --", stacktest.UserPassword},
		{`" OR ""="`, `" OR ""="`},
		{"%", stacktest.UserPassword},
		{"%@example.com", stacktest.UserPassword},
		{"_" + email[1:], stacktest.UserPassword},
		{email + "\x00", stacktest.UserPassword},
		{email, "' OR '1'='1"},
		{email, "') OR ('1'='1"},
		{email, stacktest.UserPassword + "' OR '1'='1"},
		{long + "@example.com", stacktest.UserPassword},
		{email, long},
		{long, long},
		{stacktest.AdminEmail, "x' UNION SELECT id, '$2a$04$abcdefghijklmnopqrstuu', 1 FROM users --"},
	}
	for _, c := range cases {
		r.Runs++
		tok, a := s.login(c.email, c.password)
		if tok != "" || a.status != http.StatusUnauthorized || a.errorMessage() != "invalid email or password" ||
			!strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Basic") {
			r.Failures++
			t.Errorf("login %.40q / %.40q: %s", c.email, c.password, a)
		}
	}
	// Nothing was changed: the same users, and both still log in.
	r.Runs++
	if after := s.do("GET", "/users", s.AdminToken, nil); !bytes.Equal(after.body, usersBefore.body) {
		r.Failures++
		t.Errorf("users changed:\nbefore %s\nafter  %s", usersBefore, after)
	}
	for _, u := range [][2]string{{email, stacktest.UserPassword}, {stacktest.AdminEmail, stacktest.AdminPassword}} {
		r.Runs++
		if tok, a := s.login(u[0], u[1]); tok == "" {
			r.Failures++
			t.Errorf("%s cannot log in any more: %s", u[0], a)
		}
	}
}

// Bad tokens at every function that checks one: validate itself, upload and
// download (which ask validate), and login's admin API (which verifies on its
// own). Each answers 401 with an RFC 6750 challenge and a JSON error, never
// echoes the token, and upload stores nothing.
func TestBadTokensEverywhere(t *testing.T) {
	r := record(t, "bad input: bad tokens at validate, upload, download and the admin API")
	s := sharedSystem(t)
	claims := tokenClaims(t, s.AdminToken)
	key := signingKey(t, s)
	now := time.Now()
	with := func(changes jwt.MapClaims) jwt.MapClaims {
		c := jwt.MapClaims{}
		for k, v := range claims {
			c[k] = v
		}
		for k, v := range changes {
			c[k] = v
		}
		return c
	}
	rs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodRS256, key, c) }
	public, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	publicPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: public})
	segments := strings.Split(s.AdminToken, ".")
	noneHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))

	cases := []struct{ name, token string }{
		{"none", ""},
		{"garbage", "garbage"},
		{"truncated", s.AdminToken[:len(s.AdminToken)-10]},
		{"payload of another token", segments[0] + "." + strings.Split(rs(with(jwt.MapClaims{"admin": true, "sub": "999"})), ".")[1] + "." + segments[2]},
		{"alg none", noneHeader + "." + segments[1] + "."},
		{"alg none with the signature kept", noneHeader + "." + segments[1] + "." + segments[2]},
		{"HS256 keyed with the RS256 public key (PEM)", sign(t, jwt.SigningMethodHS256, publicPEM, claims)},
		{"HS256 keyed with the RS256 public key (DER)", sign(t, jwt.SigningMethodHS256, public, claims)},
		{"expired", rs(with(jwt.MapClaims{"iat": now.Add(-2 * time.Hour).Unix(), "nbf": now.Add(-2 * time.Hour).Unix(), "exp": now.Add(-time.Hour).Unix()}))},
		{"iat in the future", rs(with(jwt.MapClaims{"iat": now.Add(time.Hour).Unix()}))},
		{"nbf in the future", rs(with(jwt.MapClaims{"nbf": now.Add(time.Hour).Unix()}))},
		{"wrong iss", rs(with(jwt.MapClaims{"iss": "someone-else"}))},
		{"wrong aud", rs(with(jwt.MapClaims{"aud": []string{"someone-else"}}))},
		{"huge (over 8 KB, validly signed)", rs(with(jwt.MapClaims{"padding": strings.Repeat("p", 9<<10)}))},
	}
	missing := "0123456789abcdef01234567"
	endpoints := []struct{ method, path string }{
		{"POST", "/validate"}, {"GET", "/jobs"}, {"GET", "/download?fid=" + missing}, {"POST", "/upload"}, {"GET", "/users"},
	}
	video, err := os.ReadFile(clip(t, 2))
	if err != nil {
		t.Fatal(err)
	}
	before := s.quiet(t)
	for _, c := range cases {
		for _, e := range endpoints {
			r.Runs++
			a := s.do(e.method, e.path, c.token, bytes.NewReader(video), "Content-Type", "video/mp4")
			challenge := a.header.Get("WWW-Authenticate")
			ok := a.status == http.StatusUnauthorized && strings.HasPrefix(challenge, "Bearer") && a.errorMessage() != "" &&
				(c.token == "" || (strings.Contains(challenge, `error="invalid_token"`) && !bytes.Contains(a.body, []byte(c.token))))
			if !ok {
				r.Failures++
				t.Errorf("%s: %s %s = %s (WWW-Authenticate %q)", c.name, e.method, e.path, a, challenge)
			}
		}
	}
	// The control: the genuine token passes where the forged ones failed.
	for _, e := range []struct{ method, path string }{{"POST", "/validate"}, {"GET", "/jobs"}, {"GET", "/users"}} {
		r.Runs++
		if a := s.do(e.method, e.path, s.AdminToken, nil); a.status != http.StatusOK {
			r.Failures++
			t.Errorf("genuine token: %s %s = %s", e.method, e.path, a)
		}
	}
	if after := s.counts(t); after != before {
		r.Lost++
		t.Errorf("storage changed: %+v -> %+v", before, after)
	}
	r.figure("%d token cases x %d endpoints", len(cases), len(endpoints))
}

// The upload limit, to the byte: MAX_UPLOAD_BYTES is accepted, one byte more
// is refused, whether announced by Content-Length or streamed chunked.
func TestUploadLimitToTheByte(t *testing.T) {
	r := record(t, "bad input: upload of exactly MAX_UPLOAD_BYTES and one byte over")
	s := sharedSystem(t)
	exact := wav(sharedMaxUpload)
	before := s.quiet(t)
	for _, c := range []struct {
		name    string
		body    []byte
		chunked bool
	}{
		{"one byte over, Content-Length", append(exact, 0), false},
		{"one byte over, chunked", append(exact, 0), true},
	} {
		r.Runs++
		var body io.Reader = bytes.NewReader(c.body)
		if c.chunked {
			body = io.MultiReader(body) // hides the length: sent chunked
		}
		a := s.do("POST", "/upload?filename=over.wav", s.AdminToken, body, "Content-Type", "audio/wav")
		if a.status != http.StatusRequestEntityTooLarge || a.errorMessage() == "" {
			r.Failures++
			t.Errorf("%s: %s", c.name, a)
		}
	}
	s.waitCounts(t, before, time.Minute)

	for _, chunked := range []bool{false, true} {
		r.Runs++
		var body io.Reader = bytes.NewReader(exact)
		if chunked {
			body = io.MultiReader(body)
		}
		a := s.do("POST", "/upload?filename=exact.wav", s.AdminToken, body, "Content-Type", "audio/wav")
		fid, _ := a.json()["video_fid"].(string)
		if a.status != http.StatusAccepted {
			r.Failures++
			t.Errorf("exactly %d bytes (chunked %v): %s", sharedMaxUpload, chunked, a)
			continue
		}
		if job := s.WaitJob(t, s.AdminToken, fid, 2*time.Minute); job.State != "done" || job.Size != sharedMaxUpload {
			r.Failures++
			t.Errorf("job of the exact upload: %v", job)
		}
	}
}

// wav is a WAV file of exactly size bytes: 16-bit mono 8 kHz silence.
func wav(size int) []byte {
	data := size - 44
	var b bytes.Buffer
	b.WriteString("RIFF")
	binary.Write(&b, binary.LittleEndian, uint32(size-8))
	b.WriteString("WAVEfmt ")
	for _, v := range []any{uint32(16), uint16(1), uint16(1), uint32(8000), uint32(16000), uint16(2), uint16(16)} {
		binary.Write(&b, binary.LittleEndian, v) // fmt: PCM, mono, 8 kHz, 16 kB/s, 2-byte frames, 16 bits
	}
	b.WriteString("data")
	binary.Write(&b, binary.LittleEndian, uint32(data))
	b.Write(make([]byte, data))
	return b.Bytes()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// trickle uploads the file at path to baseURL + "/upload" in chunks of one
// byte every 250 ms after a first kilobyte (so that upload has sniffed a
// video and is storing it), until an answer comes, the connection ends, or
// `within` has passed.
func trickle(t *testing.T, baseURL, token, path string, within time.Duration) answer {
	t.Helper()
	video, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	conn := rawUpload(t, baseURL, token, "chunked")
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(within))
	fmt.Fprintf(conn, "%x\r\n%s\r\n", 1024, video[:1024])
	got := make(chan answer, 1)
	go func() { got <- readAnswer(conn) }()
	ticker := time.NewTicker(250 * time.Millisecond)
	defer ticker.Stop()
	for sent := 1024; ; {
		select {
		case a := <-got:
			return a
		case <-ticker.C:
			if sent < len(video) {
				conn.Write([]byte{'1', '\r', '\n', video[sent], '\r', '\n'})
				sent++
			}
		}
	}
}

// A client that hangs up in the middle of its upload leaves nothing behind.
func TestClientAbortThroughTheGateway(t *testing.T) {
	r := record(t, "bad input: client aborts mid-upload through the gateway")
	s := sharedSystem(t)
	before := s.quiet(t)
	big := wav(800 << 10)
	n := shared.upload.count()
	conn := rawUpload(t, s.URL, s.AdminToken, fmt.Sprint(len(big)))
	if _, err := conn.Write(big[:300<<10]); err != nil {
		t.Fatal(err)
	}
	r.Runs++
	conn.(*net.TCPConn).SetLinger(0) // a reset, as a killed client would
	conn.Close()
	if status := shared.upload.waitAnswer(t, n, time.Minute); status != http.StatusBadRequest {
		r.Failures++
		t.Errorf("upload answered %d to an aborted upload, want 400", status)
	}
	s.waitCounts(t, before, time.Minute)
}

// rawUpload opens a connection to baseURL (the front door or the upload
// function) and sends the headers of an upload whose length is "chunked" or a
// Content-Length. Reads and writes give up after a minute.
func rawUpload(t *testing.T, baseURL, token, length string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(baseURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(time.Minute))
	framing := "Transfer-Encoding: chunked"
	if length != "chunked" {
		framing = "Content-Length: " + length
	}
	auth := ""
	if token != "" {
		auth = "Authorization: Bearer " + token + "\r\n"
	}
	fmt.Fprintf(conn, "POST /upload?filename=slow.mp4 HTTP/1.1\r\nHost: mp3converter\r\n%s"+
		"Content-Type: video/mp4\r\n%s\r\n\r\n", auth, framing)
	return conn
}

func readAnswer(conn net.Conn) answer {
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, header: resp.Header, body: b}
}

// A file with 20 audio streams: the first is converted (a 2 s tone; the
// others are 3 s of silence).
func TestTwentyAudioStreamsFirstIsConverted(t *testing.T) {
	r := record(t, "media: a file with 20 audio streams (the first is converted)")
	s := sharedSystem(t)
	args := []string{"-f", "lavfi", "-i", "color=c=black:size=64x64:rate=5:duration=3",
		"-f", "lavfi", "-i", "sine=frequency=440:duration=2"}
	maps := []string{"-map", "0:v", "-map", "1:a"}
	for i := 2; i <= 20; i++ {
		args = append(args, "-f", "lavfi", "-i", "anullsrc=r=44100:cl=mono:d=3")
		maps = append(maps, "-map", fmt.Sprintf("%d:a", i))
	}
	args = append(append(args, maps...), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac")
	path := mediaFile(t, "twenty-streams.mkv", args...)

	r.Runs++
	fid := s.Upload(t, s.AdminToken, path, "twenty-streams.mkv")
	job := s.WaitJob(t, s.AdminToken, fid, 2*time.Minute)
	if job.State != "done" {
		t.Fatalf("job = %v", job)
	}
	mp3 := s.DownloadMP3(t, s.AdminToken, fid)
	codec, seconds, loudest := probeAudio(t, mp3)
	r.figure("MP3: %s, %.2f s, max volume %.1f dB", codec, seconds, loudest)
	if codec != "mp3" || seconds < 1.8 || seconds > 2.5 || loudest < -30 {
		r.Failures++
		t.Errorf("MP3 of %s, %.2f s, max volume %.1f dB: want the first stream (a 2 s tone)", codec, seconds, loudest)
	}
}

// An hour of silence is audio like any other: it converts, to an MP3 of an hour.
func TestHourOfSilenceConverts(t *testing.T) {
	r := record(t, "media: an hour of silence (video with a silent audio track)")
	s := sharedSystem(t)
	path := mediaFile(t, "silence-1h.mp4",
		"-f", "lavfi", "-i", "color=c=black:size=64x64:rate=1:duration=3600",
		"-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono:d=3600",
		"-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "8k", "-shortest")
	r.Runs++
	fid := s.Upload(t, s.AdminToken, path, "silence-1h.mp4")
	job := s.WaitJob(t, s.AdminToken, fid, 3*time.Minute)
	if job.State != "done" {
		t.Fatalf("job = %v", job)
	}
	codec, seconds, _ := probeAudio(t, s.DownloadMP3(t, s.AdminToken, fid))
	r.figure("MP3: %s, %.0f s; job duration_seconds %v", codec, seconds, job.DurationSeconds)
	if codec != "mp3" || seconds < 3599 || seconds > 3601 {
		r.Failures++
		t.Errorf("MP3 of %s, %.1f s, want an hour", codec, seconds)
	}
}

// --- tokens ---

// tokenClaims decodes (without verifying) the claims of a token login issued.
func tokenClaims(t *testing.T, token string) jwt.MapClaims {
	t.Helper()
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(token, claims); err != nil {
		t.Fatal(err)
	}
	return claims
}

// signingKey is the system's RS256 key (the stack keeps it in its data dir).
func signingKey(t *testing.T, s *system) *rsa.PrivateKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.DataDir, "jwt-private.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := jwt.ParseRSAPrivateKeyFromPEM(b)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
