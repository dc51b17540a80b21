package function

// A real MySQL-protocol server for the tests: MariaDB (or any MySQL) when
// MYSQL_DSN is set, else go-mysql-server in-process on loopback.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"sync"
	"testing"

	sqle "github.com/dolthub/go-mysql-server"
	"github.com/dolthub/go-mysql-server/memory"
	"github.com/dolthub/go-mysql-server/server"
	gmssql "github.com/dolthub/go-mysql-server/sql"
	"github.com/go-sql-driver/mysql"
	"github.com/sirupsen/logrus"
)

// testDSN returns a DSN naming a fresh database that does not exist yet;
// it is dropped when the test ends.
func testDSN(t *testing.T) string {
	t.Helper()
	dbName := "t" + randomHex(4) + "_auth"
	if dsn := os.Getenv("MYSQL_DSN"); dsn != "" {
		cfg, err := mysql.ParseDSN(dsn)
		if err != nil {
			t.Fatalf("MYSQL_DSN: %v", err)
		}
		cfg.DBName = dbName
		cfg.ParseTime = true
		t.Cleanup(func() { dropDatabase(t, cfg) })
		return cfg.FormatDSN()
	}
	return startGMS(t, "127.0.0.1:0").dsn(dbName)
}

func dropDatabase(t *testing.T, cfg *mysql.Config) {
	cfg = cfg.Clone()
	dbName := cfg.DBName
	cfg.DBName = ""
	db, err := openConfig(cfg)
	if err != nil {
		t.Errorf("drop database: %v", err)
		return
	}
	defer db.Close()
	if _, err := db.ExecContext(context.Background(), "DROP DATABASE IF EXISTS "+quoteIdent(dbName)); err != nil {
		t.Errorf("drop database: %v", err)
	}
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
