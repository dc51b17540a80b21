package function

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// mongoURI is MONGODB_URI when set, else an in-process FerretDB (SQLite) started by TestMain.
var mongoURI string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	if mongoURI = os.Getenv("MONGODB_URI"); mongoURI != "" {
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "download-ferretdb-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	fdb, err := ferretdb.New(&ferretdb.Config{
		Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
		Handler:   "sqlite",
		SQLiteURL: "file:" + dir + "/?_pragma=synchronous(normal)", // no fsync per commit, as the local stack
		// FerretDB logs every error reply at WARN with a full dump.
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "ferretdb:", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = fdb.Run(ctx)
	}()
	mongoURI = fdb.MongoDBURI() // waits for the listener
	code := m.Run()
	cancel()
	<-done
	return code
}
