package stack_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"mp3converter/internal/client"
	"mp3converter/internal/local/stack"
	"mp3converter/internal/local/standins"
	"mp3converter/internal/mailtest"
	"mp3converter/internal/stacktest"
)

// The stack is killed (SIGKILL) while convert is converting, then started
// again on the same data: with the RabbitMQ backend the event is redelivered,
// the job ends done, and the user gets exactly one email.
func TestKilledMidConversionLosesNothing(t *testing.T) {
	rabbitURL := os.Getenv("RABBITMQ_URL")
	if rabbitURL == "" {
		t.Skip("RABBITMQ_URL is not set: only a durable broker survives a kill (CI sets it)")
	}
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

	prefix := "crash" + stacktest.RandomHex(4)
	defer stacktest.DeleteBrokerTopology(rabbitURL, prefix)
	addr := stacktest.FreeAddr(t)
	dataDir := t.TempDir()
	env := append(os.Environ(),
		"RABBITMQ_URL="+rabbitURL, "MP3C_BROKER_PREFIX="+prefix,
		"MYSQL_DSN="+mysqlSrv.DSN, "MONGODB_URI="+mongoSrv.URI, "MONGODB_DB_PREFIX=",
		"SMTP_URL="+mail.URL, "MP3C_ADMIN_EMAIL="+stacktest.AdminEmail, "MP3C_ADMIN_PASSWORD="+stacktest.AdminPassword,
		"BCRYPT_COST=4", "MP3C_LOG_LEVEL=info")

	first := up(t, env, addr, dataDir)
	tok, err := (&client.Client{Server: "http://" + addr}).Login(context.Background(), stacktest.AdminEmail, stacktest.AdminPassword)
	if err != nil {
		t.Fatal(err)
	}
	// The API of the process, through stacktest's helpers.
	e := &stacktest.Stack{Stack: &stack.Stack{URL: "http://" + addr}, AdminToken: tok.AccessToken}
	// Long audio, so the kill lands while ffmpeg runs.
	long := filepath.Join(t.TempDir(), "long.mp4")
	stacktest.FFmpeg(t, long, "-f", "lavfi", "-i", "color=c=black:size=64x64:rate=1:duration=300",
		"-f", "lavfi", "-i", "sine=frequency=440:duration=300", "-c:v", "libx264", "-c:a", "aac", "-shortest")
	fid := e.Upload(t, e.AdminToken, long, "long.mp4")
	first.WaitLog(t, `"msg":"claimed the job"`, 2*time.Minute)
	first.Kill()

	second := up(t, env, addr, dataDir)
	msg := nextMail(t, mail)
	if !strings.Contains(msg.subject, "ready") {
		t.Fatalf("subject %q, want the ready mail", msg.subject)
	}
	if job := jobOf(t, e, fid); job.State != "done" {
		t.Fatalf("job = %+v", job)
	}
	if err := second.Stop(); err != nil {
		t.Fatal(err)
	}

	// Nothing is left queued that could send a second email later, the user
	// got one email, and GridFS holds one complete MP3 and no stray chunks.
	for _, queue := range []string{"convert", "notify-converted", "notify-failed"} {
		n, err := stacktest.QueueDepth(rabbitURL, prefix+"mp3converter.default."+queue)
		if err != nil {
			t.Fatalf("queue %s: %v", queue, err)
		}
		if n != 0 {
			t.Errorf("queue %s still holds %d messages", queue, n)
		}
	}
	if n := len(mail.All()); n != 1 {
		t.Fatalf("%d emails sent, want exactly 1", n)
	}
	assertOneMP3(t, mongoSrv.URI, fid)
}

// up runs `mp3converter up` and waits until it says it is up.
func up(t *testing.T, env []string, addr, dataDir string) *stacktest.Process {
	t.Helper()
	p := stacktest.StartProcess(t, env, "up", "--addr", addr, "--data-dir", dataDir)
	p.WaitLog(t, "is up at", 2*time.Minute)
	return p
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
