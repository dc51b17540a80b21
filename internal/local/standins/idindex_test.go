package standins

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// FerretDB's lookups by _id search an index instead of scanning the table: for the
// collections there when the stand-in starts, and for those created while it runs.
func TestLookupsByIDUseAnIndex(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	insert := func(uri, coll string) {
		t.Helper()
		c, err := mongo.Connect(options.Client().ApplyURI(uri))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Disconnect(ctx)
		for i := range 3 {
			doc := bson.D{{Key: "_id", Value: fmt.Sprintf("f/%d", i)}, {Key: "n", Value: i}}
			if _, err := c.Database("files").Collection(coll).InsertOne(ctx, doc); err != nil {
				t.Fatal(err)
			}
		}
		var got struct{ N int }
		if err := c.Database("files").Collection(coll).FindOne(ctx, bson.D{{Key: "_id", Value: "f/2"}}).Decode(&got); err != nil || got.N != 2 {
			t.Fatalf("find by _id in %s: %+v, %v", coll, got, err)
		}
	}

	m, err := StartMongoDB("127.0.0.1:0", dir)
	if err != nil {
		t.Fatal(err)
	}
	insert(m.URI, "before.chunks")
	m.Close()

	m, err = StartMongoDB("127.0.0.1:0", dir) // indexes what is there before it answers
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	assertIndexedLookup(t, dir, "before.chunks")

	insert(m.URI, "after.chunks")
	if n, err := indexIDs(ctx, dir); err != nil || n != 1 {
		t.Fatalf("indexIDs: %d created, %v; want the new collection's one", n, err)
	}
	assertIndexedLookup(t, dir, "after.chunks")
	if n, err := indexIDs(ctx, dir); err != nil || n != 0 {
		t.Errorf("indexIDs again: %d created, %v; want none", n, err)
	}
}

// assertIndexedLookup asks SQLite how it runs FerretDB's own lookup by _id on coll.
func assertIndexedLookup(t *testing.T, dir, coll string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "files.sqlite")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var table string
	if err := db.QueryRow(`SELECT table_name FROM _ferretdb_collections WHERE name = ?`, coll).Scan(&table); err != nil {
		t.Fatal(err)
	}
	// The query of FerretDB v1.24's sqlite backend (collection.go, Query) for {_id: <string>}.
	rows, err := db.Query(fmt.Sprintf(`EXPLAIN QUERY PLAN SELECT _ferretdb_sjson FROM %q WHERE _ferretdb_sjson->'$._id' = ? LIMIT ?`, table), `"f/2"`, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if got := strings.Join(plan, "; "); !strings.Contains(got, "USING INDEX "+table+idIndexName) {
		t.Errorf("%s: SQLite's plan for a lookup by _id is %q, want a search of %s", coll, got, table+idIndexName)
	}
}
