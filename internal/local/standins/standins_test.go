package standins

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	_ "github.com/go-sql-driver/mysql"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func TestMySQLServesQueries(t *testing.T) {
	m, err := StartMySQL("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	db, err := sql.Open("mysql", m.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec("CREATE TABLE t (id BIGINT PRIMARY KEY, name VARCHAR(10) UNIQUE)"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO t VALUES (?, ?)", 1, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("INSERT INTO t VALUES (?, ?)", 2, "a"); err == nil {
		t.Fatal("duplicate unique key accepted")
	}
	var name string
	if err := db.QueryRow("SELECT name FROM t WHERE id = ?", 1).Scan(&name); err != nil || name != "a" {
		t.Fatalf("select = %q, %v", name, err)
	}
}

func TestMongoDBKeepsDataAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	put := func(write bool) string {
		m, err := StartMongoDB("127.0.0.1:0", dir)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		ctx := context.Background()
		client, err := mongo.Connect(options.Client().ApplyURI(m.URI))
		if err != nil {
			t.Fatal(err)
		}
		defer client.Disconnect(ctx)
		coll := client.Database("videos").Collection("jobs")
		if write {
			if _, err := coll.InsertOne(ctx, bson.D{{Key: "_id", Value: "x"}, {Key: "state", Value: "done"}}); err != nil {
				t.Fatal(err)
			}
		}
		var doc struct{ State string }
		if err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: "x"}}).Decode(&doc); err != nil {
			t.Fatal(err)
		}
		return doc.State
	}
	if got := put(true); got != "done" {
		t.Fatalf("first run read %q", got)
	}
	if got := put(false); got != "done" {
		t.Fatalf("after restart read %q, want the stored document", got)
	}
}

// TestMariaDBKeepsUsersAcrossRestarts: the private MariaDB of `up` keeps
// what was written in its folder, and takes concurrent writes.
func TestMariaDBKeepsUsersAcrossRestarts(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	open := func() (*MariaDB, *sql.DB) {
		m, err := StartMariaDB(ctx, dir)
		if errors.Is(err, ErrNoMariaDB) {
			t.Skip("MariaDB is not installed (apt-get install mariadb-server)")
		}
		if err != nil {
			t.Fatal(err)
		}
		db, err := sql.Open("mysql", strings.Replace(m.DSN, "/auth?", "/?", 1))
		if err != nil {
			t.Fatal(err)
		}
		return m, db
	}

	m, db := open()
	for _, stmt := range []string{"CREATE DATABASE auth", "CREATE TABLE auth.users (id BIGINT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(255) UNIQUE)"} {
		if _, err := db.Exec(stmt); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			if _, err := db.Exec("INSERT INTO auth.users (email) VALUES (?)", fmt.Sprintf("u%d@example.com", i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	db.Close()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	m, db = open()
	defer m.Close()
	defer db.Close()
	var n int
	if err := db.QueryRow("SELECT COUNT(*) FROM auth.users").Scan(&n); err != nil || n != 40 {
		t.Fatalf("after a restart: %d users, %v; want the 40 written at once", n, err)
	}
}
