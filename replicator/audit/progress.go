package audit

// Progress shows how far a long scan has got; the command line draws a
// progress bar with it on a terminal.
type Progress interface {
	// Start begins a stage of total units (rows), described by what.
	Start(what string, total int64)
	// Add records n more units done.
	Add(n int64)
	// Finish ends the stage.
	Finish()
}

// noProgress shows nothing.
type noProgress struct{}

func (noProgress) Start(string, int64) {}
func (noProgress) Add(int64)           {}
func (noProgress) Finish()             {}

var _ Progress = noProgress{}
