package train

// Hash is the hash of the settings that decide a job's trajectory, the one
// its snapshots record and are checked against on restore (hash); a
// model's provenance record names it beside the job's spec.
func (c JobConfig) Hash() string { return c.hash() }
