package kit

// JobState is the state of a conversion job: the "state" field of a jobs document, whose
// contract is events/job/schema.json (events/README.md says which function moves it where).
type JobState string

const (
	JobUploaded   JobState = "uploaded"   // upload stored the video and announced it
	JobConverting JobState = "converting" // convert claimed it (a claim may have lapsed: the broker retries)
	JobDone       JobState = "done"       // convert stored the MP3: final
	JobFailed     JobState = "failed"     // convert gave up for good, notify got the dead letter, or sweep gave up re-driving: final
	JobExpired    JobState = "expired"    // sweep deleted the MP3 after MP3_RETENTION: final
)

// final reports whether no function moves the job on from s.
func (s JobState) final() bool { return s == JobDone || s == JobFailed || s == JobExpired }
