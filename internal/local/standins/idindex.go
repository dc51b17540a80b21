package standins

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // FerretDB's own SQLite driver, registered as "sqlite"
)

// FerretDB v1.24 on SQLite looks a document up by _id with the filter
// `_ferretdb_sjson->'$._id' = ?` (internal/backends/sqlite/collection.go), but
// the unique index it creates for _id is on `_ferretdb_sjson->"_id"`, an
// expression SQLite does not match to it. So every lookup by _id scans the table
// from its first row until it finds the document: reading the 400th chunk of a
// collection took 114 ms, the first 7 ms, and a GridFS file read chunk by chunk
// cost more the more was stored before it. An index on the very expression of the
// filter makes each lookup a search (5 ms whatever the position, measured with
// 400 chunks of 128 KiB).
//
// idIndexName is that index's name suffix; FerretDB does not know the index (it
// is not in its metadata), ignores it, and drops it with its table.
const idIndexName = "_id_lookup"

// idIndexEvery is how often the stand-in looks for new collections to index.
// Collections are created by the functions' first writes; a new one is small
// for its first seconds.
const idIndexEvery = 2 * time.Second

// indexIDs gives every FerretDB table under dir the index on its _id lookup
// expression, where it lacks it, and returns how many it created.
func indexIDs(ctx context.Context, dir string) (int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.sqlite"))
	if err != nil {
		return 0, err
	}
	created := 0
	var errs []error
	for _, file := range files {
		n, err := indexIDsIn(ctx, file)
		created += n
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", filepath.Base(file), err))
		}
	}
	return created, errors.Join(errs...)
}

// indexIDsIn indexes the tables of one database file.
func indexIDsIn(ctx context.Context, file string) (int, error) {
	// mode=rw: a database dropped since the glob is not created again. busy_timeout as
	// FerretDB's own connections: a write of theirs in progress is waited for.
	db, err := sql.Open("sqlite", "file:"+file+"?mode=rw&_pragma=busy_timeout(10000)&_pragma=journal_mode(wal)")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT c.table_name FROM _ferretdb_collections c
		WHERE NOT EXISTS (SELECT 1 FROM sqlite_master m WHERE m.type = 'index' AND m.name = c.table_name || ?)`, idIndexName)
	if err != nil {
		if msg := err.Error(); strings.Contains(msg, "no such table") || strings.Contains(msg, "unable to open") {
			return 0, nil // a database FerretDB has not set up yet, or has just dropped
		}
		return 0, err
	}
	var tables []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return 0, err
		}
		tables = append(tables, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	created := 0
	for _, t := range tables {
		q := fmt.Sprintf(`CREATE INDEX IF NOT EXISTS %q ON %q (_ferretdb_sjson->'$._id')`, t+idIndexName, t)
		if _, err := db.ExecContext(ctx, q); err != nil {
			if strings.Contains(err.Error(), "no such table") {
				continue // dropped meanwhile
			}
			return created, err
		}
		created++
	}
	return created, nil
}
