// Package standins starts the servers the local stack uses when the
// environment names no real one: a private MariaDB keeping its data in the
// data dir (mariadb.go), go-mysql-server in memory where MariaDB is not
// installed, and FerretDB on SQLite files. All are real servers: the
// functions talk to them with their ordinary drivers.
package standins

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/FerretDB/FerretDB/ferretdb"
	sqle "github.com/dolthub/go-mysql-server"
	"github.com/dolthub/go-mysql-server/memory"
	"github.com/dolthub/go-mysql-server/server"
	"github.com/dolthub/go-mysql-server/sql"
	"github.com/go-sql-driver/mysql"
	"github.com/sirupsen/logrus"
)

// MySQL is a running in-memory MySQL-protocol server.
type MySQL struct {
	DSN    string // for go-sql-driver/mysql, database "auth"
	server *server.Server
}

// StartMySQL serves an in-memory MySQL on addr (e.g. "127.0.0.1:0") with
// the user root and no password. Its data lives as long as the process.
func StartMySQL(addr string) (*MySQL, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("embedded mysql: %w", err)
	}
	provider := memory.NewDBProvider(memory.NewDatabase("auth"))
	engine := sqle.NewDefault(provider)
	srv, err := server.NewServer(server.Config{Protocol: "tcp", Listener: ln},
		engine, sql.NewContext, memory.NewSessionBuilder(provider), nil)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("embedded mysql: %w", err)
	}
	logrusToSlog()
	go srv.Start()

	cfg := mysql.NewConfig()
	cfg.User = "root"
	cfg.Net = "tcp"
	cfg.Addr = ln.Addr().String()
	cfg.DBName = "auth"
	cfg.ParseTime = true
	return &MySQL{DSN: cfg.FormatDSN(), server: srv}, nil
}

// Close stops the server; the data is gone.
func (m *MySQL) Close() error { return m.server.Close() }

// MongoDB is a running FerretDB.
type MongoDB struct {
	URI     string
	stop    context.CancelFunc
	done    chan struct{} // closed when FerretDB has stopped
	indexed chan struct{} // closed when the _id indexer has stopped
}

// StartMongoDB serves FerretDB on addr with its SQLite files in dir, which
// keeps the data across restarts.
func StartMongoDB(addr, dir string) (*MongoDB, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded mongodb: %w", err)
	}
	f, err := ferretdb.New(&ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: addr},
		Handler:  "sqlite",
		// WAL with synchronous=NORMAL, as SQLite advises for WAL: a commit no longer waits for
		// an fsync (40 ms each here, so a file's chunks deleted one by one took seconds), and
		// the database stays whole after a crash of the process; only a power cut can lose
		// the last commits.
		SQLiteURL: "file:" + dir + "/?_pragma=synchronous(normal)",
		// FerretDB logs every error reply with a full dump at WARN; the
		// functions report what matters themselves.
		Logger: slog.New(minLevel{slog.Default().Handler().WithAttrs([]slog.Attr{slog.String("component", "ferretdb")}), slog.LevelError}),
	})
	if err != nil {
		return nil, fmt.Errorf("embedded mongodb: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &MongoDB{stop: cancel, done: make(chan struct{}), indexed: make(chan struct{})}
	go func() {
		defer close(m.done)
		f.Run(ctx)
	}()
	m.URI = f.MongoDBURI() // waits until the listener is up
	// Lookups by _id hit an index of their own (idindex.go): on the tables already there
	// before anything runs, then on new ones as the functions create them.
	if _, err := indexIDs(ctx, dir); err != nil {
		slog.Warn("embedded mongodb: cannot index _id lookups; reads get slower as data grows", "err", err)
	}
	go func() {
		defer close(m.indexed)
		t := time.NewTicker(idIndexEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if _, err := indexIDs(ctx, dir); err != nil && ctx.Err() == nil {
					slog.Warn("embedded mongodb: cannot index _id lookups", "err", err)
				}
			}
		}
	}()
	return m, nil
}

// Close stops FerretDB and waits for it to close its files.
func (m *MongoDB) Close() error {
	m.stop()
	<-m.indexed
	<-m.done
	return nil
}

// minLevel passes on the records of handler at level and above.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}

// logrusToSlog carries go-mysql-server's logrus output into the process's
// slog stream, so the binary logs one format. Its connection chatter (INFO)
// is dropped, and so is the warning it gives at every start about
// secure_file_priv, which concerns LOAD DATA INFILE: nothing here uses it.
func logrusToSlog() {
	logrus.SetLevel(logrus.WarnLevel)
	logrus.SetOutput(io.Discard)
	logrus.StandardLogger().ReplaceHooks(logrus.LevelHooks{})
	logrus.AddHook(slogHook{})
}

type slogHook struct{}

func (slogHook) Levels() []logrus.Level { return logrus.AllLevels }

func (slogHook) Fire(e *logrus.Entry) error {
	if strings.Contains(e.Message, "secure_file_priv") || strings.Contains(e.Message, "GRANT FILE") {
		return nil
	}
	level := slog.LevelWarn
	if e.Level <= logrus.ErrorLevel {
		level = slog.LevelError
	}
	attrs := []any{"component", "mysql-standin"}
	for k, v := range e.Data {
		attrs = append(attrs, k, fmt.Sprint(v))
	}
	slog.Log(context.Background(), level, e.Message, attrs...)
	return nil
}
