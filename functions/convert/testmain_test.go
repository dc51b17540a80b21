package function

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"

	"github.com/FerretDB/FerretDB/ferretdb"
)

// mongoURI is MONGODB_URI, or an in-process FerretDB (SQLite) started for the tests.
var mongoURI string

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	mongoURI = os.Getenv("MONGODB_URI")
	if mongoURI == "" {
		dir, err := os.MkdirTemp("", "convert-ferretdb-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		fdb, err := ferretdb.New(&ferretdb.Config{
			Listener:  ferretdb.ListenerConfig{TCP: "127.0.0.1:0"},
			Handler:   "sqlite",
			SQLiteURL: "file:" + dir + "/?_pragma=synchronous(normal)", // no fsync per commit, as the local stack
			Logger:    slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "start FerretDB:", err)
			return 1
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = fdb.Run(ctx) }()
		defer func() { cancel(); <-done }()
		mongoURI = fdb.MongoDBURI()
	}
	cleanup, err := makeMedia()
	defer cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "generate test media:", err)
		return 1
	}
	return m.Run()
}
