package stack

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"mp3converter/internal/client"
	"mp3converter/internal/local/standins"
	"mp3converter/internal/mailtest"
)

// The stack is killed (SIGKILL) while convert is converting, then started
// again on the same data: with the RabbitMQ backend the event is redelivered,
// the job ends done, and the user gets exactly one email.
func TestKilledMidConversionLosesNothing(t *testing.T) {
	rabbitURL := os.Getenv("RABBITMQ_URL")
	if rabbitURL == "" {
		t.Skip("RABBITMQ_URL is not set: only a durable broker survives a kill (CI sets it)")
	}
	bin := buildBinary(t)
	mail, err := mailtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer mail.Close()
	// MySQL and MongoDB outlive the killed process, as real services would.
	mysqlSrv, err := standins.StartMySQL("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer mysqlSrv.Close()
	mongoSrv, err := standins.StartMongoDB("127.0.0.1:0", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer mongoSrv.Close()

	prefix := "crash" + randomHex(4)
	defer deleteBrokerTopology(t, rabbitURL, prefix)
	addr := freeAddr(t)
	dataDir := t.TempDir()
	env := append(os.Environ(),
		"RABBITMQ_URL="+rabbitURL, "MP3C_BROKER_PREFIX="+prefix,
		"MYSQL_DSN="+mysqlSrv.DSN, "MONGODB_URI="+mongoSrv.URI, "MONGODB_DB_PREFIX=",
		"SMTP_URL="+mail.URL, "MP3C_ADMIN_EMAIL="+adminEmail, "MP3C_ADMIN_PASSWORD="+adminPassword,
		"BCRYPT_COST=4", "MP3C_LOG_LEVEL=info")

	first := startProcess(t, bin, env, addr, dataDir)
	c := &client.Client{Server: "http://" + addr}
	tok, err := c.Login(context.Background(), adminEmail, adminPassword)
	if err != nil {
		t.Fatal(err)
	}
	e := &testStack{Stack: &Stack{URL: "http://" + addr}, mail: mail, token: tok.AccessToken}
	// Long audio, so the kill lands while ffmpeg runs.
	fid := e.upload(t, makeLongAudioVideo(t))
	first.waitForLog(t, `"msg":"claimed the job"`)
	first.kill(t)

	second := startProcess(t, bin, env, addr, dataDir)
	msg := e.nextMail(t)
	if !strings.Contains(msg.subject, "ready") {
		t.Fatalf("subject %q, want the ready mail", msg.subject)
	}
	if job := e.job(t, fid, e.token); job["state"] != "done" {
		t.Fatalf("job = %v", job)
	}
	second.stop(t)

	// Nothing is left queued that could send a second email later, the user
	// got one email, and GridFS holds one complete MP3 and no stray chunks.
	for _, queue := range []string{"convert", "notify-converted", "notify-failed"} {
		if n := queueDepth(t, rabbitURL, prefix+"mp3converter.default."+queue); n != 0 {
			t.Errorf("queue %s still holds %d messages", queue, n)
		}
	}
	if n := len(mail.All()); n != 1 {
		t.Fatalf("%d emails sent, want exactly 1", n)
	}
	assertOneMP3(t, mongoSrv.URI, fid)
}

type process struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan error
}

// buildBinary builds mp3converter once for this test.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "mp3converter")
	out, err := exec.Command("go", "build", "-o", bin, "mp3converter/cmd/mp3converter").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// startProcess runs `mp3converter up` and waits until it says it is up.
func startProcess(t *testing.T, bin string, env []string, addr, dataDir string) *process {
	t.Helper()
	cmd := exec.Command(bin, "up", "--addr", addr, "--data-dir", dataDir)
	cmd.Env = env
	stdout, _ := cmd.StdoutPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, lines: make(chan string, 10000), done: make(chan error, 1)}
	up := make(chan struct{})
	go func() {
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			if strings.Contains(s.Text(), "is up at") {
				close(up)
			}
		}
	}()
	go func() {
		s := bufio.NewScanner(stderr)
		s.Buffer(make([]byte, 1<<20), 1<<20)
		for s.Scan() {
			select {
			case p.lines <- s.Text():
			default: // nobody is looking for more lines
			}
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	select {
	case <-up:
	case err := <-p.done:
		t.Fatalf("mp3converter up exited: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("mp3converter up did not come up within 2 minutes")
	}
	return p
}

func (p *process) waitForLog(t *testing.T, fragment string) {
	t.Helper()
	deadline := time.After(2 * time.Minute)
	for {
		select {
		case line := <-p.lines:
			if strings.Contains(line, fragment) {
				return
			}
		case <-deadline:
			t.Fatalf("no log line with %s within 2 minutes", fragment)
		}
	}
}

func (p *process) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop asks for a graceful shutdown, as Ctrl-C does, and waits for it.
func (p *process) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("mp3converter up did not exit cleanly: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("mp3converter up did not stop within a minute")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// makeLongAudioVideo is a tiny picture with five minutes of tone: ffmpeg
// takes a moment over the audio.
func makeLongAudioVideo(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "long.mp4")
	out, err := exec.Command("ffmpeg", "-nostdin", "-loglevel", "error",
		"-f", "lavfi", "-i", "color=c=black:size=64x64:rate=1:duration=300",
		"-f", "lavfi", "-i", "sine=frequency=440:duration=300",
		"-c:v", "libx264", "-c:a", "aac", "-shortest", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	return path
}

func queueDepth(t *testing.T, url, queue string) int {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("queue %s: %v", queue, err)
	}
	return q.Messages
}

// deleteBrokerTopology removes what a stack with this prefix declared.
func deleteBrokerTopology(t *testing.T, url, prefix string) {
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Logf("cleaning RabbitMQ: %v", err)
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	base := prefix + "mp3converter.default"
	for _, q := range []string{".convert", ".notify-converted", ".notify-failed", "._dlq"} {
		ch.QueueDelete(base+q, false, false, false)
	}
	ch.ExchangeDelete(base, false, false)
	ch.ExchangeDelete(base+"._dlx", false, false)
}

// assertOneMP3 checks GridFS: one complete MP3 for fid and no chunk of any
// file that does not exist.
func assertOneMP3(t *testing.T, uri, fid string) {
	t.Helper()
	ctx := context.Background()
	c, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(ctx)
	oid, _ := bson.ObjectIDFromHex(fid)
	db := c.Database("mp3s")
	files, err := db.Collection("fs.files").CountDocuments(ctx, bson.D{{Key: "_id", Value: oid}})
	if err != nil || files != 1 {
		t.Fatalf("%d MP3 files for %s (%v), want 1", files, fid, err)
	}
	var file struct {
		Length    int64 `bson:"length"`
		ChunkSize int64 `bson:"chunkSize"`
	}
	db.Collection("fs.files").FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&file)
	chunks, err := db.Collection("fs.chunks").CountDocuments(ctx, bson.D{{Key: "files_id", Value: oid}})
	if want := (file.Length + file.ChunkSize - 1) / file.ChunkSize; err != nil || chunks != want {
		t.Fatalf("%d chunks for an MP3 of %d bytes, want %d (%v)", chunks, file.Length, want, err)
	}
	for _, dbName := range []string{"videos", "mp3s"} {
		var ids []bson.ObjectID
		if err := c.Database(dbName).Collection("fs.chunks").Distinct(ctx, "files_id", bson.D{}).Decode(&ids); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			n, _ := c.Database(dbName).Collection("fs.files").CountDocuments(ctx, bson.D{{Key: "_id", Value: id}})
			if n == 0 {
				t.Errorf("%s holds chunks of a file that does not exist: %v", dbName, id)
			}
		}
	}
}
