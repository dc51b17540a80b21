//go:build reliability

package reliability

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"golang.org/x/crypto/bcrypt"

	login "mp3converter/functions/login"
	"mp3converter/internal/local/stack"
	"mp3converter/internal/stacktest"
)

// Load on the whole stack, run as a child process (`mp3converter up`) so that
// its memory can be read from /proc/PID/status: VmHWM is its peak resident
// set. MySQL (go-mysql-server) and MongoDB (FerretDB) run in this test's
// process, as separate services would: the figures are the stack's own.
// Passwords are hashed at bcrypt's default cost (10), as in production.
//
// Deliberate refusals (429 from login's limiter, 503 "try again") are
// counted, not failed; anything else (a 500, a 502, a transport error) fails.
func TestLoad(t *testing.T) {
	const (
		users       = 200
		validations = 1000
		uploads     = 50
	)
	s := &system{}
	if err := s.startBacking(false, t.TempDir()); err != nil {
		s.close()
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	addr := stacktest.FreeAddr(t)
	up := startChild(t, map[string]string{
		"PATH": os.Getenv("PATH"), "TMPDIR": t.TempDir(), "MP3C_LOG_LEVEL": "warn",
		"MYSQL_DSN": s.mysqlDSN, "MONGODB_URI": s.mongoURI, "MONGODB_DB_PREFIX": s.prefix, "SMTP_URL": s.smtpURL,
		"MP3C_ADMIN_EMAIL": stacktest.AdminEmail, "MP3C_ADMIN_PASSWORD": stacktest.AdminPassword,
	}, "up", "--addr", addr, "--data-dir", filepath.Join(t.TempDir(), "data"))
	up.WaitLog(t, "is up at", 2*time.Minute)
	s.Stack = &stacktest.Stack{Stack: &stack.Stack{URL: "http://" + addr}}
	memory := func() string {
		return fmt.Sprintf("peak RSS (VmHWM) %d MiB", procStatus(t, up, "VmHWM")/1024)
	}
	start := memory()

	// 200 users, made straight in MySQL (the admin API would take as long, one at a time).
	passwords := map[string]string{}
	var emails []string
	for i := range users {
		email := fmt.Sprintf("user%03d@example.com", i)
		emails = append(emails, email)
		passwords[email] = "password-" + stacktest.RandomHex(4)
	}
	createUsers(t, s.mysqlDirect, passwords)

	// 200 concurrent logins, each user from an address of their own.
	t.Run("logins", func(t *testing.T) {
		r := record(t, fmt.Sprintf("load: %d concurrent logins (bcrypt cost 10), one client address each", users))
		tokens := make([]string, users)
		stats := concurrently(users, func(i int) answer {
			c := clientFrom(fmt.Sprintf("127.0.1.%d", i+1))
			a := loginFrom(c, s.URL, emails[i], passwords[emails[i]])
			tokens[i], _ = a.json()["access_token"].(string)
			return a
		})
		stats.check(t, r, http.StatusOK)
		// The default stack's MariaDB takes 200 logins at once (go-mysql-server,
		// the fallback, answered some with 503 "user store unavailable").
		if n := stats.statuses["503"]; n > 0 && (s.mariadb || os.Getenv("MYSQL_DSN") != "") {
			r.Failures += n
			t.Errorf("%d logins answered 503", n)
		}
		r.figure("%s; %s", stats, memory())
		loadTokens = tokens
	})

	// 1000 concurrent validations of those tokens, through the front door (web).
	t.Run("validations", func(t *testing.T) {
		r := record(t, fmt.Sprintf("load: %d concurrent token validations", validations))
		tokens := liveTokens(t)
		client := &http.Client{Timeout: requestTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: validations}}
		stats := concurrently(validations, func(i int) answer {
			req, _ := http.NewRequest(http.MethodPost, s.URL+"/validate", nil)
			req.Header.Set("Authorization", "Bearer "+tokens[i%len(tokens)])
			return send(client, req)
		})
		stats.check(t, r, http.StatusOK)
		r.figure("%s; %s", stats, memory())
	})

	// 50 concurrent uploads of 20 MB.
	t.Run("uploads", func(t *testing.T) {
		r := record(t, fmt.Sprintf("load: %d concurrent uploads of 20 MB", uploads))
		tokens := liveTokens(t)
		video := mediaFile(t, "big-20MB.mp4", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25:duration=14",
			"-f", "lavfi", "-i", "sine=frequency=440:duration=14", "-c:v", "mpeg4", "-q:v", "1", "-c:a", "aac", "-shortest")
		info, err := os.Stat(video)
		if err != nil {
			t.Fatal(err)
		}
		// A gigabyte into FerretDB (about 13 MB/s here) takes minutes: each
		// upload gets 10 minutes before it counts as hung.
		client := &http.Client{Timeout: 10 * time.Minute}
		fids := make([]string, uploads)
		stats := concurrently(uploads, func(i int) answer {
			a := s.uploadWith(client, tokens[i%len(tokens)], video, fmt.Sprintf("big-%02d.mp4", i))
			fids[i], _ = a.json()["video_fid"].(string)
			return a
		})
		stats.check(t, r, http.StatusAccepted)
		r.figure("%d bytes each; %s; %s", info.Size(), stats, memory())
		t.Logf("uploads: %s", stats)
		loadPeak = procStatus(t, up, "VmHWM")
		// Every accepted upload is stored whole: its job has the size, and its
		// video is complete (or already converted, and deleted). Checked with
		// the stack stopped, so that its conversions do not compete with the check.
		up.Kill()
		for _, problem := range s.storedWhole(t, fids, info.Size()) {
			r.Lost++
			t.Error(problem)
		}
	})
	t.Logf("peak RSS of the stack: after start-up %s, after the load %d MiB", start, loadPeak/1024)
}

// loadPeak is the stack's peak RSS (KiB) under TestLoad, for TestUploadMemoryIsBoundedUnderLoad.
var loadPeak int

// The stack's memory stays bounded under 50 concurrent uploads of 20 MB. It grew
// without bound once (past 4 GiB): the MongoDB driver's GridFS upload stream held
// 16 MiB per upload and nothing bounded the uploads in flight. Now upload writes
// its chunks from one pooled 128 KiB buffer, and the host queues requests beyond
// upload's containerConcurrency as Knative's queue-proxy does: 264 to 400 MiB
// measured for the whole stack, every function and FerretDB in one process (its
// SQLite keeps a page cache of up to 2 MiB per connection, and it opens up to 100).
// The bound leaves room for that, and still catches the old growth.
func TestUploadMemoryIsBoundedUnderLoad(t *testing.T) {
	if loadPeak == 0 {
		t.Skip("needs TestLoad's figure")
	}
	if limit := 1024 * 1024; loadPeak > limit {
		t.Fatalf("peak RSS %d MiB under 50 concurrent uploads of 20 MB, want under %d MiB", loadPeak/1024, limit/1024)
	}
}

// loadTokens are the tokens the logins got, for the phases after them.
var loadTokens []string

func liveTokens(t *testing.T) []string {
	var live []string
	for _, tok := range loadTokens {
		if tok != "" {
			live = append(live, tok)
		}
	}
	if len(live) == 0 {
		t.Fatal("no tokens: the logins failed")
	}
	return live
}

// createUsers adds the users with bcrypt's default cost, two at a time, then
// checks they are all there and adds again those that are not: go-mysql-server,
// the fallback where MariaDB cannot be had, loses some of its concurrent writes.
func createUsers(t *testing.T, dsn string, passwords map[string]string) {
	t.Helper()
	ctx := context.Background()
	db, err := login.OpenDB(dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	emails := make(chan string, len(passwords))
	for e := range passwords {
		emails <- e
	}
	close(emails)
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for e := range emails {
				login.AddUser(ctx, db, e, passwords[e], false, bcrypt.DefaultCost) // checked below
			}
		})
	}
	wg.Wait()
	users, err := login.ListUsers(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, u := range users {
		stored[u.Email] = true
	}
	for e, p := range passwords {
		if !stored[e] {
			if _, err := login.AddUser(ctx, db, e, p, false, bcrypt.DefaultCost); err != nil {
				t.Fatalf("adding %s: %v", e, err)
			}
		}
	}
}

// loadStats are the answers to n requests sent at once.
type loadStats struct {
	statuses map[string]int
	messages map[string]int // the error messages of the refusals
	took     []time.Duration
	errs     []string
}

// concurrently runs n requests at the same moment (they all wait for a start signal).
func concurrently(n int, request func(i int) answer) *loadStats {
	st := &loadStats{statuses: map[string]int{}, messages: map[string]int{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			a := request(i)
			mu.Lock()
			defer mu.Unlock()
			key := fmt.Sprint(a.status)
			if a.err != nil {
				key = "error"
				st.errs = append(st.errs, a.err.Error())
			}
			st.statuses[key]++
			if msg := a.errorMessage(); msg != "" {
				st.messages[fmt.Sprintf("%d %s", a.status, msg)]++
			}
			st.took = append(st.took, a.took)
		})
	}
	close(start)
	wg.Wait()
	sort.Slice(st.took, func(i, j int) bool { return st.took[i] < st.took[j] })
	return st
}

// check fails the test for any answer but want, 429 and 503, and counts them in r.
func (st *loadStats) check(t *testing.T, r *Result, want int) {
	for key, n := range st.statuses {
		r.Runs += n
		if key != fmt.Sprint(want) && key != "429" && key != "503" {
			r.Failures += n
			t.Errorf("%d answers %s", n, key)
		}
	}
	if len(st.errs) > 0 {
		t.Errorf("transport errors, e.g. %s", st.errs[0])
	}
}

func (st *loadStats) String() string {
	median, slowest := st.took[len(st.took)/2], st.took[len(st.took)-1]
	return fmt.Sprintf("answers %s; median %s, slowest %s; refusals: %s", tally(st.statuses),
		median.Round(time.Millisecond), slowest.Round(time.Millisecond), tally(st.messages))
}

// storedWhole checks that every accepted upload ("" for a refused one) has
// a job with its size and a complete video in GridFS, unless the job is
// already done (the video is then deleted). One pass over each collection:
// FerretDB answers a query by files_id by reading the whole chunk collection.
func (s *system) storedWhole(t *testing.T, fids []string, size int64) (problems []string) {
	t.Helper()
	videos := s.mongo.Database(s.prefix + "videos")
	var oids bson.A
	for _, fid := range fids {
		if oid, err := bson.ObjectIDFromHex(fid); err == nil {
			oids = append(oids, oid)
		}
	}
	in := bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: oids}}}}
	jobs := s.jobs(t, in)
	files := findAll[struct {
		ID        bson.ObjectID `bson:"_id"`
		Length    int64         `bson:"length"`
		ChunkSize int64         `bson:"chunkSize"`
	}](t, videos.Collection("fs.files"), in, nil)
	chunks := findAll[struct {
		FilesID bson.ObjectID `bson:"files_id"`
	}](t, videos.Collection("fs.chunks"), bson.D{}, bson.D{{Key: "files_id", Value: 1}})
	perFile := map[bson.ObjectID]int64{}
	for _, c := range chunks {
		perFile[c.FilesID]++
	}
	stored := map[bson.ObjectID]int64{} // id -> length, for complete files
	for _, f := range files {
		if want := (f.Length + f.ChunkSize - 1) / f.ChunkSize; perFile[f.ID] == want {
			stored[f.ID] = f.Length
		}
	}
	found := map[bson.ObjectID]bool{}
	for _, j := range jobs {
		found[j.ID] = true
		switch {
		case j.Size != size:
			problems = append(problems, fmt.Sprintf("job %s: size %d, want %d", j.ID.Hex(), j.Size, size))
		case j.State != "done" && stored[j.ID] != size:
			problems = append(problems, fmt.Sprintf("job %s (%s): no complete video of %d bytes", j.ID.Hex(), j.State, size))
		}
	}
	for _, oid := range oids {
		if !found[oid.(bson.ObjectID)] {
			problems = append(problems, fmt.Sprintf("upload %s accepted, but it has no job", oid.(bson.ObjectID).Hex()))
		}
	}
	return problems
}
