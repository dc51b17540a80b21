package function

// A real MySQL-protocol server for the tests: MariaDB (or any MySQL) when
// MYSQL_DSN is set, else go-mysql-server in-process on loopback.

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net"
	"os"
	"strings"
	"sync"
	"testing"

	sqle "github.com/dolthub/go-mysql-server"
	"github.com/dolthub/go-mysql-server/memory"
	"github.com/dolthub/go-mysql-server/server"
	gmssql "github.com/dolthub/go-mysql-server/sql"
	"github.com/go-sql-driver/mysql"
	"github.com/sirupsen/logrus"
)

// testDSN returns a DSN naming a fresh, empty database; it is dropped when the
// test ends. validate creates no tables: createUsersTable does what login does.
func testDSN(t *testing.T) string {
	t.Helper()
	dbName := "t" + randomHex(4) + "_auth"
	var cfg *mysql.Config
	if dsn := os.Getenv("MYSQL_DSN"); dsn != "" {
		var err error
		if cfg, err = mysql.ParseDSN(dsn); err != nil {
			t.Fatalf("MYSQL_DSN: %v", err)
		}
		cfg.DBName = dbName
		cfg.ParseTime = true
	} else {
		cfg, _ = mysql.ParseDSN(startGMS(t, "127.0.0.1:0").dsn(dbName))
	}
	noDB := cfg.Clone()
	noDB.DBName = ""
	admin := sqlOpen(t, noDB.FormatDSN())
	exec(t, admin, "CREATE DATABASE "+quoteIdent(dbName))
	t.Cleanup(func() {
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + quoteIdent(dbName)); err != nil {
			t.Errorf("drop database: %v", err)
		}
	})
	return cfg.FormatDSN()
}

// createUsersTable creates the users table exactly as login's migration does.
func createUsersTable(t *testing.T, db *sql.DB) {
	exec(t, db, `CREATE TABLE IF NOT EXISTS users (
	id BIGINT AUTO_INCREMENT PRIMARY KEY,
	email VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL UNIQUE,
	password_hash VARCHAR(255) NOT NULL,
	is_admin BOOL NOT NULL DEFAULT FALSE,
	credential_version BIGINT NOT NULL DEFAULT 0,
	created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
)`)
}

// insertUser adds a user and returns its id.
func insertUser(t *testing.T, db *sql.DB, email string, admin bool) int64 {
	t.Helper()
	res, err := db.Exec("INSERT INTO users (email, password_hash, is_admin) VALUES (?, ?, ?)", email, "$2a$04$notarealhash", admin)
	if err != nil {
		t.Fatalf("insert %s: %v", email, err)
	}
	id, err := res.LastInsertId()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func sqlOpen(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func exec(t *testing.T, db *sql.DB, query string, args ...any) {
	t.Helper()
	if _, err := db.Exec(query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

func quoteIdent(name string) string {
	return "`" + strings.ReplaceAll(name, "`", "``") + "`"
}

// gmsServer is an in-process go-mysql-server whose listener can be closed
// (with every open connection, like a crashed server) and opened again on the
// same address with the same data.
type gmsServer struct {
	addr   string
	engine *sqle.Engine
	pro    *memory.DbProvider
	ln     *trackingListener
}

func startGMS(t *testing.T, addr string) *gmsServer {
	t.Helper()
	logrus.SetLevel(logrus.ErrorLevel)
	pro := memory.NewDBProvider()
	s := &gmsServer{engine: sqle.NewDefault(pro), pro: pro}
	s.listen(t, addr)
	t.Cleanup(s.stop)
	return s
}

func (s *gmsServer) dsn(dbName string) string {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr, cfg.DBName, cfg.ParseTime = "root", "tcp", s.addr, dbName, true
	return cfg.FormatDSN()
}

func (s *gmsServer) listen(t *testing.T, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	s.ln = &trackingListener{Listener: ln}
	s.addr = ln.Addr().String()
	srv, err := server.NewServer(server.Config{Protocol: "tcp", Listener: s.ln}, s.engine, gmssql.NewContext, memory.NewSessionBuilder(s.pro), nil)
	if err != nil {
		t.Fatalf("go-mysql-server: %v", err)
	}
	go srv.Start()
}

// stop closes the listener and every connection: the server is gone.
func (s *gmsServer) stop() { s.ln.closeAll() }

// restart serves the same data on the same address again.
func (s *gmsServer) restart(t *testing.T) { s.listen(t, s.addr) }

type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.mu.Lock()
		l.conns = append(l.conns, c)
		l.mu.Unlock()
	}
	return c, err
}

func (l *trackingListener) closeAll() {
	l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		c.Close()
	}
	l.conns = nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
