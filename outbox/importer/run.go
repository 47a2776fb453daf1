package importer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Summary counts what an import did (or, in a dry run, would do).
type Summary struct {
	// Provider is clerk, stack or workos.
	Provider string `json:"provider"`
	// DryRun is true when nothing was written.
	DryRun bool `json:"dry_run"`
	// Pages is the number of list pages fetched.
	Pages int `json:"pages"`
	// Listed is the number of user objects the listing returned.
	Listed int64 `json:"listed"`
	// Inserted is the number of new import rows in neon_auth.outbox.
	Inserted int64 `json:"inserted"`
	// AlreadyPresent is the number of listed users whose row for this
	// version was already there: unchanged since an earlier import.
	AlreadyPresent int64 `json:"already_present"`
	// Skipped is the number of listed objects that could not be imported
	// (no usable id, or text Postgres cannot store); each is logged.
	Skipped int64 `json:"skipped"`
	// Checked is the number of live users_sync users the listing lacked,
	// looked up one by one before deciding (PruneMissing only).
	Checked int64 `json:"checked"`
	// StillPresent is the number of those the provider still has: the
	// listing missed them (for instance while others were deleted), so
	// they were imported instead of deleted.
	StillPresent int64 `json:"still_present"`
	// Deletions is the number of new user.deleted rows (PruneMissing only).
	Deletions int64 `json:"deletions"`
}

// Progress is reported after each committed page and pruned batch.
type Progress struct {
	// Phase is "listing" or "pruning".
	Phase string
	// Summary holds the counts so far.
	Summary Summary
}

// pruneBatch is how many candidates are read, checked and written at a time.
const pruneBatch = 200

// Run imports the provider's users into neon_auth.outbox through conn, one
// committed transaction per page, and returns what it did. It needs the
// connection to itself for the whole run (PruneMissing keeps the listed ids
// in a temporary table of its session). On an error, including a cancelled
// ctx, what was committed stays and the Summary says how far it got;
// running it again inserts only what is missing.
func Run(ctx context.Context, conn *pgx.Conn, cfg Config) (Summary, error) {
	if err := cfg.Validate(); err != nil {
		return Summary{}, err
	}
	cfg = cfg.withDefaults()
	src, err := newSource(cfg)
	if err != nil {
		return Summary{}, err
	}
	if err := checkSchema(ctx, conn); err != nil {
		return Summary{}, err
	}
	if cfg.PruneMissing {
		if err := createSeenTable(ctx, conn); err != nil {
			return Summary{}, err
		}
	}
	r := &run{cfg: cfg, conn: conn, src: src, sum: Summary{Provider: cfg.Provider, DryRun: cfg.DryRun}}
	// The deletions' time: a user the listing lacks was gone by the time it
	// started, and a later event (a re-creation) still wins over it.
	start := cfg.now()
	if err := r.list(ctx); err != nil {
		return r.sum, err
	}
	if cfg.PruneMissing {
		if err := r.prune(ctx, start); err != nil {
			return r.sum, err
		}
	}
	return r.sum, nil
}

// run is one import's state.
type run struct {
	cfg  Config
	conn *pgx.Conn
	src  source
	sum  Summary
}

// list pages through the provider's users, committing each page.
func (r *run) list(ctx context.Context) error {
	cursor := ""
	for {
		p, err := r.src.listPage(ctx, cursor)
		if errors.Is(err, errNotFound) {
			return fmt.Errorf("list %s users: the API answered 404 Not Found: check --api-url, the base URL without the API path (%s)",
				r.cfg.Provider, r.cfg.APIURL)
		}
		if err != nil {
			return fmt.Errorf("list %s users (page %d): %w", r.cfg.Provider, r.sum.Pages+1, err)
		}
		r.sum.Pages++
		r.sum.Listed += int64(len(p.users))
		if err := r.importUsers(ctx, p, r.cfg.now()); err != nil {
			return err
		}
		r.report("listing")
		if p.next == "" {
			return nil
		}
		if p.next == cursor {
			return fmt.Errorf("list %s users: the API answered page %d with the cursor it was asked for (%q); stopping rather than looping", r.cfg.Provider, r.sum.Pages, cursor)
		}
		cursor = p.next
	}
}

// importUsers commits the rows of a page's users fetched at fetchedAt.
func (r *run) importUsers(ctx context.Context, p page, fetchedAt time.Time) error {
	rows := make([]importRow, 0, len(p.users))
	for i, u := range p.users {
		row, err := buildRow(r.cfg.Provider, u, fetchedAt)
		if err != nil {
			r.sum.Skipped++
			r.cfg.Logger.Warn("skipped a user the provider listed", "provider", r.cfg.Provider,
				"page", r.sum.Pages, "index", i, "reason", err.Error())
			continue
		}
		rows = append(rows, row)
	}
	res, err := writeImports(ctx, r.conn, r.cfg.Provider, rows, r.cfg.PruneMissing, r.cfg.DryRun)
	if err != nil {
		return err
	}
	for _, refused := range res.refused {
		r.cfg.Logger.Warn("skipped a user Postgres cannot store", "provider", r.cfg.Provider,
			"user_id", refused.userID, "reason", refused.reason)
	}
	r.sum.Inserted += res.inserted
	r.sum.Skipped += int64(len(res.refused))
	r.sum.AlreadyPresent += int64(len(rows)-len(res.refused)) - res.inserted
	return nil
}

// prune looks up, one by one, each live users_sync user of the provider that
// the listing lacked, and writes a user.deleted for those the provider no
// longer has. The look-up guards against a listing that skipped users (an
// offset page shifted by a deletion, a cursor that vanished): a user it
// finds is imported instead.
func (r *run) prune(ctx context.Context, listingStart time.Time) error {
	after := ""
	for {
		ids, err := pruneCandidates(ctx, r.conn, r.cfg.Provider, after, pruneBatch)
		if err != nil || len(ids) == 0 {
			return err
		}
		after = ids[len(ids)-1]
		var gone []string
		var found page
		for _, id := range ids {
			user, err := r.src.getUser(ctx, id)
			switch {
			case errors.Is(err, errNotFound):
				gone = append(gone, id)
			case err != nil:
				return fmt.Errorf("look up %s user %q, which the listing lacked: %w", r.cfg.Provider, id, err)
			default:
				found.users = append(found.users, user)
			}
		}
		r.sum.Checked += int64(len(ids))
		r.sum.StillPresent += int64(len(found.users))
		if len(found.users) > 0 {
			r.cfg.Logger.Warn("the listing missed users the provider still has; imported them",
				"provider", r.cfg.Provider, "users", len(found.users))
			if err := r.importUsers(ctx, found, r.cfg.now()); err != nil {
				return err
			}
		}
		n, err := writeDeletes(ctx, r.conn, r.cfg.Provider, gone, listingStart, r.cfg.DryRun)
		if err != nil {
			return err
		}
		r.sum.Deletions += n
		r.report("pruning")
	}
}

func (r *run) report(phase string) {
	if r.cfg.Progress != nil {
		r.cfg.Progress(Progress{Phase: phase, Summary: r.sum})
	}
}
