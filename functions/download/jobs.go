package function

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// job is a document of the jobs collection, and what clients see of it.
type job struct {
	ID              bson.ObjectID `bson:"_id" json:"-"`
	VideoFID        string        `bson:"-" json:"video_fid"`
	OwnerID         string        `bson:"owner_id" json:"-"`
	Username        string        `bson:"username" json:"-"`
	Filename        string        `bson:"filename" json:"filename"`
	ContentType     string        `bson:"content_type" json:"content_type"`
	Size            int64         `bson:"size" json:"size"`
	State           JobState      `bson:"state" json:"state"`
	Reason          string        `bson:"reason" json:"reason"`
	MP3FID          string        `bson:"mp3_fid" json:"mp3_fid"`
	DurationSeconds float64       `bson:"duration_seconds" json:"duration_seconds"`
	Attempts        int32         `bson:"attempts" json:"attempts"`
	CreatedAt       time.Time     `bson:"created_at" json:"created_at"`
	UpdatedAt       time.Time     `bson:"updated_at" json:"updated_at"`
	Progress        *int32        `bson:"progress,omitempty" json:"progress,omitempty"` // 0-100, while converting
	DownloadURL     string        `bson:"-" json:"download_url,omitempty"`
}

// view fills in what clients see besides the stored fields.
func (s *state) view(j *job) *job {
	j.VideoFID = j.ID.Hex()
	j.CreatedAt, j.UpdatedAt = j.CreatedAt.UTC(), j.UpdatedAt.UTC()
	if j.State != JobConverting {
		j.Progress = nil // a percentage means something only while ffmpeg runs
	}
	if j.State == JobDone && j.MP3FID != "" {
		// Signed for the owner: a plain link, which a browser downloads with no token.
		j.DownloadURL = s.publicURL + "/download?" + s.links.query(j.MP3FID, j.Username, time.Now().Add(s.linkTTL))
	}
	return j
}

// getJob answers GET /jobs/{video_fid}.
func (s *state) getJob(w http.ResponseWriter, r *http.Request, who identity, hexID string) {
	var j job
	if _, ok := s.findOwned(w, r, s.videos.Collection("jobs"), hexID, who, &j); !ok {
		return
	}
	writeJSON(w, http.StatusOK, s.view(&j))
}

// listJobs answers GET /jobs?limit=&before=&all=: the caller's jobs newest first (an admin's
// too; everyone's with all=true), paged by the last video_fid seen.
func (s *state) listJobs(w http.ResponseWriter, r *http.Request, who identity) {
	q := r.URL.Query()
	limit := defaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be 1..%d", maxLimit))
			return
		}
		limit = n
	}
	filter := bson.D{}
	if all, _ := strconv.ParseBool(q.Get("all")); !all || !who.Admin {
		filter = append(filter, ownedBy(who))
	}
	if v := q.Get("before"); v != "" {
		before, ok := parseFID(w, v)
		if !ok {
			return
		}
		filter = append(filter, bson.E{Key: "_id", Value: bson.D{{Key: "$lt", Value: before}}})
	}

	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	jobs := s.videos.Collection("jobs")
	if !s.jobsIndexed.Load() {
		// Best effort, once per process: lists stay fast as the collection grows.
		_, err := jobs.Indexes().CreateMany(ctx, []mongo.IndexModel{
			{Keys: bson.D{{Key: "owner_id", Value: 1}, {Key: "_id", Value: -1}}},
			{Keys: bson.D{{Key: "username", Value: 1}, {Key: "_id", Value: -1}}}, // jobs stored before owner_id
		})
		if err == nil {
			s.jobsIndexed.Store(true)
		}
	}
	// ObjectIDs grow with time: _id descending is newest first, and a stable cursor.
	cur, err := jobs.Find(ctx, filter, options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}).SetLimit(int64(limit)+1))
	if err != nil {
		s.storageError(w, "list jobs", err)
		return
	}
	docs := []*job{}
	if err := cur.All(ctx, &docs); err != nil {
		s.storageError(w, "list jobs", err)
		return
	}
	next := ""
	if len(docs) > limit {
		docs = docs[:limit]
		next = docs[limit-1].ID.Hex()
	}
	for _, j := range docs {
		s.view(j)
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": docs, "next": next})
}
