package function

import (
	"context"
	"errors"
	"net/http"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

const (
	queryTimeout = 10 * time.Second
	msgStorage   = "storage unavailable, try again"
	msgNotFound  = "not found" // also for what exists but is not the caller's
	defaultLimit = 20
	maxLimit     = 100
	mp3MediaType = "audio/mpeg"
)

func (s *state) storageError(w http.ResponseWriter, op string, err error) {
	s.log.Error("storage error", "op", op, "err", err)
	writeError(w, http.StatusServiceUnavailable, msgStorage)
}

// owner is whose a document is: id, the user's id (the token's sub), decides who may see
// it; email is where mail goes and what signed links name.
type owner struct{ id, email string }

// owned is a document with an owner: a GridFS files document or a job.
type owned interface{ owner() owner }

func (d *fileDoc) owner() owner { return owner{d.Metadata.OwnerID, d.Metadata.Username} }
func (j *job) owner() owner     { return owner{j.OwnerID, j.Username} }

// findOwned decodes the document of coll whose _id is hexID into doc, if who may see it.
// Otherwise it answers: 400 for a malformed id, 404 alike for missing and not theirs, 503.
func (s *state) findOwned(w http.ResponseWriter, r *http.Request, coll *mongo.Collection, hexID string, who identity, doc owned) (bson.ObjectID, bool) {
	fid, ok := parseFID(w, hexID)
	if !ok {
		return fid, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), queryTimeout)
	defer cancel()
	err := coll.FindOne(ctx, bson.D{{Key: "_id", Value: fid}}).Decode(doc)
	switch {
	case errors.Is(err, mongo.ErrNoDocuments) || (err == nil && !who.mayRead(doc.owner())):
		writeError(w, http.StatusNotFound, msgNotFound)
	case err != nil:
		s.storageError(w, "find in "+coll.Database().Name()+"."+coll.Name(), err)
	default:
		return fid, true
	}
	return fid, false
}

// mayRead tells whether the caller may see something owned by o: an admin, or the user
// whose id it carries. An address is not enough: a user deleted and made again under the
// same address is a new id and sees nothing of the old one's. Documents stored before
// owner_id existed carry only the address and match by it (the sweep removes a deleted
// user's by address and date, so those of a new account under that address are theirs).
func (id identity) mayRead(o owner) bool {
	switch {
	case id.Admin:
		return true
	case o.id != "":
		return o.id == id.UserID
	default:
		return o.email != "" && o.email == id.Username
	}
}

// ownedBy selects the documents of the jobs collection that mayRead lets the caller see
// (admins aside).
func ownedBy(who identity) bson.E {
	return bson.E{Key: "$or", Value: bson.A{
		bson.D{{Key: "owner_id", Value: who.UserID}},
		bson.D{{Key: "owner_id", Value: bson.D{{Key: "$exists", Value: false}}}, {Key: "username", Value: who.Username}},
	}}
}

// parseFID parses a hex ObjectID, or answers 400.
func parseFID(w http.ResponseWriter, v string) (bson.ObjectID, bool) {
	fid, err := bson.ObjectIDFromHex(v)
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed id: want 24 hex digits")
		return fid, false
	}
	return fid, true
}
