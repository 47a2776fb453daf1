package main

import (
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"

	"github.com/usersync/usersync/replicator/audit"
)

// barProgress draws an audit.Progress as a progress bar.
type barProgress struct {
	w   io.Writer
	bar *progressbar.ProgressBar
}

var _ audit.Progress = (*barProgress)(nil)

// newProgress returns a progress bar on w when w is a terminal, and nil
// (nothing shown) otherwise, so that logs and pipes stay clean.
func newProgress(w io.Writer) audit.Progress {
	f, ok := w.(*os.File)
	if !ok || !isatty.IsTerminal(f.Fd()) {
		return nil
	}
	return &barProgress{w: w}
}

func (p *barProgress) Start(what string, total int64) {
	p.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
}

func (p *barProgress) Add(n int64) {
	if p.bar != nil {
		_ = p.bar.Add64(n)
	}
}

func (p *barProgress) Finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		p.bar = nil
	}
}
