//go:build reliability

package reliability

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// What the long tests share: many uploads in the background, and an audit of
// everything once the system has settled: one MP3 and one email per upload,
// no job stuck, nothing left behind.

// batch is uploads running in the background, a few at a time.
type batch struct {
	mu       sync.Mutex
	fids     []string       // accepted, in order
	statuses map[string]int // every answer, e.g. "202", "503", "error"
	done     chan struct{}
}

// uploadBatch uploads the file at path n times (as name-000.mp4, ...), `parallel`
// at a time. An upload answered 503 (deliberate: "try again") is tried again
// up to 20 times, 1 s apart, as a client would.
func (s *system) uploadBatch(token, path, name string, n, parallel int) *batch {
	b := &batch{statuses: map[string]int{}, done: make(chan struct{})}
	names := make(chan string, n)
	for i := 0; i < n; i++ {
		names <- fmt.Sprintf("%s-%03d.mp4", name, i)
	}
	close(names)
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			for name := range names {
				for try := 0; try < 20; try++ {
					a := s.upload(token, path, name)
					b.note(a)
					if fid, _ := a.json()["video_fid"].(string); a.status == http.StatusAccepted {
						b.mu.Lock()
						b.fids = append(b.fids, fid)
						b.mu.Unlock()
						break
					}
					if a.status != http.StatusServiceUnavailable {
						break
					}
					time.Sleep(time.Second)
				}
			}
		})
	}
	go func() { wg.Wait(); close(b.done) }()
	return b
}

func (b *batch) note(a answer) {
	key := fmt.Sprint(a.status)
	if a.err != nil {
		key = "error"
	}
	b.mu.Lock()
	b.statuses[key]++
	b.mu.Unlock()
}

// wait waits for every upload of the batch to be answered.
func (b *batch) wait(t testing.TB, within time.Duration) []string {
	t.Helper()
	select {
	case <-b.done:
	case <-time.After(within):
		t.Fatalf("uploads not all answered within %s", within)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.fids...)
}

// fidsSoFar are the uploads accepted so far.
func (b *batch) fidsSoFar() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.fids...)
}

func (b *batch) summary() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return tally(b.statuses)
}

// readyCount is how many of fids have had their "ready" email so far.
func (s *system) readyCount(fids []string) int {
	perFID, _ := readyMails(s.mail.All())
	n := 0
	for _, fid := range fids {
		if perFID[fid] > 0 {
			n++
		}
	}
	return n
}

// settle waits until every upload of fids has its email, or `within` has passed.
func (s *system) settle(fids []string, within time.Duration) {
	for deadline := time.Now().Add(within); time.Now().Before(deadline) && s.readyCount(fids) < len(fids); time.Sleep(200 * time.Millisecond) {
	}
}

// audit checks the promises for the uploads of fids, once the system has
// settled and (for RabbitMQ) the stack has been closed, and adds to r what
// was lost, duplicated or left behind.
func (s *system) audit(t *testing.T, r *Result, fids []string) {
	t.Helper()
	ctx := context.Background()
	perFID, others := readyMails(s.mail.All())
	lost, dups := 0, 0
	for _, fid := range fids {
		switch n := perFID[fid]; {
		case n == 0:
			lost++
			t.Errorf("no email for %s", fid)
		case n > 1:
			dups += n - 1
			t.Errorf("%d emails for %s", n, fid)
		}
	}
	if others > 0 {
		r.Failures += others
		t.Errorf("%d emails that are not 'ready' emails", others)
	}

	// Jobs: every one done, none still claimed by convert or notify.
	oids := make(bson.A, 0, len(fids))
	for _, fid := range fids {
		oid, _ := bson.ObjectIDFromHex(fid)
		oids = append(oids, oid)
	}
	jobs := s.mongo.Database(s.prefix + "videos").Collection("jobs")
	notDone, err := jobs.CountDocuments(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: oids}}}, {Key: "state", Value: bson.D{{Key: "$ne", Value: "done"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if notDone > 0 {
		t.Errorf("%d jobs not done", notDone)
		lost = max(lost, int(notDone))
	}
	states, notifyInFlight := s.jobStates(t)
	c := s.counts(t)
	strays := s.strayChunks(t)
	incomplete := s.incompleteMP3s(t)
	leftovers := map[string]int{
		"convert claims": int(c.Claims), "notify claims": notifyInFlight, "stray chunks": strays,
		"incomplete MP3s": incomplete, "video files": int(c.VideoFiles), "video chunks": int(c.VideoChunks),
	}
	for what, n := range leftovers {
		if n != 0 {
			r.Failures++
			t.Errorf("left behind: %d %s", n, what)
		}
	}
	if c.Claims > 0 {
		s.logClaims(t)
	}
	if int(c.MP3Files) != len(fids) {
		t.Errorf("%d MP3s for %d uploads", c.MP3Files, len(fids))
		dups += max(0, int(c.MP3Files)-len(fids))
	}
	r.Lost += lost
	r.Duplicates += dups
	r.figure("jobs by state: %s; MP3s %d; emails %d", tally(states), c.MP3Files, len(s.mail.All()))
	r.figure("left behind: %d stray chunks, %d incomplete MP3s, %d video files, %d convert claims, %d notify claims",
		strays, incomplete, c.VideoFiles, c.Claims, notifyInFlight)
}

// incompleteMP3s counts MP3 files documents whose chunks are not all there.
func (s *system) incompleteMP3s(t testing.TB) int {
	t.Helper()
	d := s.mongo.Database(s.prefix + "mp3s")
	files := findAll[struct {
		ID        bson.ObjectID `bson:"_id"`
		Length    int64         `bson:"length"`
		ChunkSize int64         `bson:"chunkSize"`
	}](t, d.Collection("fs.files"), bson.D{}, nil)
	chunks := findAll[struct {
		FilesID bson.ObjectID `bson:"files_id"`
	}](t, d.Collection("fs.chunks"), bson.D{}, bson.D{{Key: "files_id", Value: 1}})
	perFile := map[bson.ObjectID]int64{}
	for _, c := range chunks {
		perFile[c.FilesID]++
	}
	bad := 0
	for _, f := range files {
		if want := (f.Length + f.ChunkSize - 1) / f.ChunkSize; perFile[f.ID] != want {
			t.Logf("MP3 %s: %d chunks for %d bytes, want %d", f.ID.Hex(), perFile[f.ID], f.Length, want)
			bad++
		}
	}
	return bad
}

// auditQueues checks, once the stack is closed (what was unacked is back in
// its queue), that no event is left that could still send an email or
// convert anything, and that nothing was parked in the dead-letter queue.
func (s *system) auditQueues(t *testing.T, r *Result) {
	t.Helper()
	if s.Env["RABBITMQ_URL"] == "" {
		return
	}
	depths := queueDepths(t, s.Env["RABBITMQ_URL"], s.BrokerPrefix)
	for q, n := range depths {
		if n != 0 {
			r.Failures++
			t.Errorf("queue %s holds %d messages", q, n)
		}
	}
	r.figure("messages left in the queues after the run: %s", tally(depths))
}

// attemptsSummary is how many jobs took how many convert attempts.
func (s *system) attemptsSummary(t testing.TB) string {
	t.Helper()
	jobsPer := map[int32]int{}
	for _, j := range s.jobs(t, bson.D{}) {
		jobsPer[j.Attempts]++
	}
	return "jobs per number of attempts: " + tally(jobsPer)
}

// logClaims shows convert's claims that are left, with their job.
func (s *system) logClaims(t testing.TB) {
	t.Helper()
	for _, c := range findAll[bson.M](t, s.mongo.Database(s.prefix+"videos").Collection("convert_claims"), bson.D{}, nil) {
		for _, j := range s.jobs(t, bson.D{{Key: "_id", Value: c["video_fid"]}}) {
			t.Logf("claim left: %v; its job: state %s, attempts %d", c, j.State, j.Attempts)
		}
	}
}
