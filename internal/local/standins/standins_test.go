package standins

import (
	"context"
	"database/sql"
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
