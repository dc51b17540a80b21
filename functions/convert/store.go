package function

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.opentelemetry.io/otel/attribute"
)

// storedMP3 is a files document of the mp3s GridFS bucket.
type storedMP3 struct {
	Length   int64  `bson:"length"`
	Filename string `bson:"filename"`
	Metadata struct {
		DurationSeconds float64 `bson:"duration_seconds"`
	} `bson:"metadata"`
}

func (s *state) videosDB() *mongo.Database { return s.client.Database(s.prefix + "videos") }

func (s *state) mp3sDB() *mongo.Database { return s.client.Database(s.prefix + "mp3s") }

// findMP3 reads the files document of a complete MP3 (mongo.ErrNoDocuments when there is none).
func (s *state) findMP3(ctx context.Context, oid bson.ObjectID) (storedMP3, error) {
	var mp3 storedMP3
	err := s.mp3sDB().Collection("fs.files").FindOne(ctx, bson.D{{Key: "_id", Value: oid}}).Decode(&mp3)
	return mp3, err
}

// errStoredByOther: another delivery is storing the same MP3 (a duplicate key on its chunks).
var errStoredByOther = errors.New("another delivery is storing this MP3")

// storeMP3 stores the MP3 in the mp3s bucket under the video's id.
func (s *state) storeMP3(ctx context.Context, j job, name string, seconds float64) (_ storedMP3, err error) {
	ctx, span := startSpan(ctx, "gridfs.write", attribute.String("gridfs.bucket", s.prefix+"mp3s/fs"))
	defer func() { endSpan(span, err) }()
	src, err := os.Open(name)
	if err != nil {
		return storedMP3{}, err
	}
	defer src.Close()
	mp3 := storedMP3{Filename: mp3Name(j.Filename)}
	mp3.Metadata.DurationSeconds = seconds
	meta := bson.D{
		{Key: "username", Value: j.Username},
		{Key: "video_fid", Value: j.ID.Hex()},
		{Key: "duration_seconds", Value: seconds},
	}
	if j.OwnerID != "" { // download lets the owner's id read it (the address alone, without)
		meta = append(meta, bson.E{Key: "owner_id", Value: j.OwnerID})
	}
	// The kit's writer, not the driver's: its chunk ids let download read the MP3 by _id.
	dst, err := NewGridFSWriter(ctx, s.mp3sDB(), "fs", j.ID)
	if err != nil {
		return storedMP3{}, err
	}
	n, err := dst.ReadFrom(src)
	if err == nil {
		err = dst.Close(mp3.Filename, meta)
	}
	if mongo.IsDuplicateKeyError(err) {
		// Another delivery finished first: its MP3 is the result. Its chunks are not ours to delete.
		mp3, err = s.findMP3(ctx, j.ID)
		if err != nil {
			err = fmt.Errorf("%w: %w", errStoredByOther, err)
		}
		return mp3, err
	}
	mp3.Length = n
	return mp3, err
}

// mp3Name is the video's base name with its extension replaced by .mp3.
func mp3Name(video string) string {
	base := path.Base(strings.ReplaceAll(video, `\`, "/"))
	base = strings.TrimSuffix(base, path.Ext(base))
	if base == "" || base == "." || base == "/" {
		base = "audio"
	}
	return base + ".mp3"
}
