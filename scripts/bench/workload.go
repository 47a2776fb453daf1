package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// workloadConfig shapes the generated events.
type workloadConfig struct {
	// Users is the number of distinct Clerk users the events are about.
	Users int
	// Seed makes the events reproducible: two generators with the same
	// config produce the same events.
	Seed uint64
	// Start is the event time of the first in-order event.
	Start time.Time
	// Step is how far event time advances per in-order event.
	Step time.Duration
	// LateRatio is the share of events delivered late: their time lies up to
	// LateBy before the clock, so many lose to a newer event (stale).
	LateRatio float64
	// LateBy bounds how late a late event is.
	LateBy time.Duration
	// TieRatio is the share of events stamped with the same millisecond as
	// their user's previous event.
	TieRatio float64
	// DeleteRatio is the share of user.deleted events (0: only user.updated).
	DeleteRatio float64
}

// event is one outbox row to insert, as Clerk's webhook receiver would.
type event struct {
	EventType string
	Payload   []byte
	EventID   string
	// OccurredAt is the outbox column: set for half the rows (as the
	// webhook receiver does), nil for the others (as a plain INSERT may),
	// so that both ways of finding the event time are exercised.
	OccurredAt *time.Time
	// ReceivedAt is when the receiver got it, a little after the clock:
	// the backfill stores it, so that both of its databases hold the same
	// rows; the drain and live phases leave the column default, now().
	ReceivedAt time.Time
}

// clerkUser is what stays the same about a user from event to event.
type clerkUser struct {
	id, first, last, username string
	emails                    []clerkEmail
	primary                   int // index into emails of the primary address
	createdAt                 int64
	externalID                string
}

type clerkEmail struct{ id, address string }

// generator produces Clerk user.updated (and user.deleted) envelopes of
// about 1.1 KB over a fixed set of users. It is not safe for concurrent use;
// fork gives each goroutine its own.
type generator struct {
	cfg   workloadConfig
	users []clerkUser
	rng   *rand.Rand
	clock time.Time
	// lastAt is the time of each user's last event from this generator.
	lastAt []time.Time
}

func newGenerator(cfg workloadConfig) *generator {
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x75737973796e63))
	users := make([]clerkUser, cfg.Users)
	for i := range users {
		users[i] = newClerkUser(rng, cfg.Start)
	}
	return &generator{cfg: cfg, users: users, rng: rng, clock: cfg.Start, lastAt: make([]time.Time, len(users))}
}

// fork returns a generator over the same users with its own random
// stream, for a concurrent load generator, which stamps events with
// eventAt.
func (g *generator) fork(seed uint64) *generator {
	return &generator{cfg: g.cfg, users: g.users, rng: rand.New(rand.NewPCG(seed, g.cfg.Seed)), lastAt: make([]time.Time, len(g.users))}
}

var (
	firstNames = []string{"Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken", "Dennis", "Frances",
		"John", "Radia", "Leslie", "Niklaus", "Tony", "Shafi", "Whitfield", "Adele", "Jean", "Sophie", "Mary", "Kristen",
		"Bjarne", "Guido", "Rob", "Robert", "Linus", "Anita", "Hedy", "Evelyn", "Katherine", "Dorothy", "Annie", "Lynn"}
	lastNames = []string{"Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Hamilton", "Thompson", "Ritchie",
		"Allen", "McCarthy", "Perlman", "Lamport", "Wirth", "Hoare", "Goldwasser", "Diffie", "Goldberg", "Sammet",
		"Wilson", "Keller", "Nygaard", "Stroustrup", "van Rossum", "Pike", "Griesemer", "Torvalds", "Borg", "Lamarr"}
	domains    = []string{"example.com", "example.org", "example.net", "mail.example.com", "corp.example.org"}
	userAgents = []string{
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7)",
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
		"Mozilla/5.0 (X11; Linux x86_64)",
	}
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// clerkID returns prefix followed by 27 base62 characters, the shape of
// Clerk's ids (user_29w83sxmDNGwOuEthce5gg56FcC).
func clerkID(rng *rand.Rand, prefix string) string {
	b := make([]byte, 0, len(prefix)+27)
	b = append(b, prefix...)
	for range 27 {
		b = append(b, base62[rng.IntN(len(base62))])
	}
	return string(b)
}

func newClerkUser(rng *rand.Rand, start time.Time) clerkUser {
	u := clerkUser{
		id:         clerkID(rng, "user_"),
		first:      firstNames[rng.IntN(len(firstNames))],
		last:       lastNames[rng.IntN(len(lastNames))],
		createdAt:  start.Add(-time.Duration(rng.Int64N(int64(3 * 365 * 24 * time.Hour)))).UnixMilli(),
		externalID: fmt.Sprint(rng.IntN(1_000_000)),
	}
	u.username = strings.ToLower(u.first+u.last) + fmt.Sprint(rng.IntN(1000))
	switch p := rng.Float64(); {
	case p < 0.03: // signed up without a name: the username stands in
		u.first, u.last = "", ""
	case p < 0.06: // a name typed with stray spaces, trimmed by the mapping
		u.first = " " + u.first + " "
	case p < 0.08: // only a first name
		u.last = ""
	}
	local := strings.ToLower(strings.ReplaceAll(u.first+"."+u.last, " ", ""))
	if strings.Trim(local, ".") == "" {
		local = u.username
	}
	n := 1
	if rng.Float64() < 0.15 { // some have a second address
		n = 2
	}
	for i := range n {
		u.emails = append(u.emails, clerkEmail{
			id:      clerkID(rng, "idn_"),
			address: fmt.Sprintf("%s%d@%s", local, i+rng.IntN(100), domains[rng.IntN(len(domains))]),
		})
	}
	u.primary = rng.IntN(n) // the primary is not always the first
	return u
}

// next returns the next event, one step of the clock after the last.
func (g *generator) next() event {
	g.clock = g.clock.Add(g.cfg.Step)
	return g.eventAt(g.clock)
}

// eventAt returns an event happening at now: in order, late, or a delete,
// per the config.
func (g *generator) eventAt(now time.Time) event {
	i := g.rng.IntN(len(g.users))
	u := &g.users[i]
	at := now
	switch p := g.rng.Float64(); {
	case p < g.cfg.LateRatio:
		at = at.Add(-time.Duration(g.rng.Int64N(int64(g.cfg.LateBy))))
	case p < g.cfg.LateRatio+g.cfg.TieRatio && !g.lastAt[i].IsZero():
		at = g.lastAt[i] // two events in one millisecond: the outbox id decides
	}
	at = at.Truncate(time.Millisecond)
	g.lastAt[i] = at
	ev := event{
		EventType:  "user.updated",
		EventID:    clerkID(g.rng, "msg_"),
		ReceivedAt: now.Add(time.Duration(g.rng.Int64N(int64(2 * time.Second)))).Truncate(time.Microsecond),
	}
	if g.rng.Float64() < 0.5 {
		ev.OccurredAt = &at
	}
	if g.rng.Float64() < g.cfg.DeleteRatio {
		ev.EventType = "user.deleted"
		ev.Payload = mustJSON(clerkEnvelope{
			Data:   clerkDeleted{Deleted: true, ID: u.id, Object: "user"},
			Object: "event", Type: ev.EventType, InstanceID: "ins_2bM4dQf6oX",
			Timestamp:  at.UnixMilli(),
			Attributes: g.attributes(),
		})
		return ev
	}
	ev.Payload = mustJSON(clerkEnvelope{
		Data:   g.userObject(u, at),
		Object: "event", Type: ev.EventType, InstanceID: "ins_2bM4dQf6oX",
		Timestamp:  at.UnixMilli(),
		Attributes: g.attributes(),
	})
	return ev
}

func (g *generator) attributes() clerkAttributes {
	return clerkAttributes{HTTPRequest: clerkHTTPRequest{
		ClientIP:  fmt.Sprintf("192.0.2.%d", 1+g.rng.IntN(254)),
		UserAgent: userAgents[g.rng.IntN(len(userAgents))],
	}}
}

// userObject renders u as Clerk's UserJSON at time at; a few events rename
// the user, so that names vary from event to event.
func (g *generator) userObject(u *clerkUser, at time.Time) clerkUserJSON {
	first, last := u.first, u.last
	if g.rng.Float64() < 0.2 && last != "" {
		last = lastNames[g.rng.IntN(len(lastNames))]
	}
	emails := make([]clerkEmailJSON, len(u.emails))
	for i, e := range u.emails {
		emails[i] = clerkEmailJSON{
			EmailAddress: e.address, ID: e.id, LinkedTo: []any{}, Object: "email_address",
			Verification: clerkVerification{Status: "verified", Strategy: "email_code"},
		}
	}
	ms := at.UnixMilli()
	return clerkUserJSON{
		BackupCodeEnabled: false, Banned: false, CreateOrganizationEnabled: true,
		CreatedAt: u.createdAt, DeleteSelfEnabled: true, EmailAddresses: emails,
		ExternalAccounts: []any{}, ExternalID: u.externalID, FirstName: first, HasImage: g.rng.IntN(2) == 0,
		ID: u.id, ImageURL: "https://img.clerk.com/" + clerkID(g.rng, "")[:12],
		LastActiveAt: ms - g.rng.Int64N(3_600_000), LastName: last, LastSignInAt: ms - g.rng.Int64N(86_400_000),
		Object: "user", PasswordEnabled: true, PhoneNumbers: []any{},
		PrimaryEmailAddressID: u.emails[u.primary].id,
		PrivateMetadata:       map[string]any{}, PublicMetadata: map[string]any{},
		SamlAccounts: []any{}, UnsafeMetadata: map[string]any{},
		UpdatedAt: ms, Username: u.username, Web3Wallets: []any{},
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil { // unreachable: the types above always encode
		panic(err)
	}
	return b
}

// The JSON shapes below follow outbox/testdata/providers/clerk_user.updated.json.
type clerkEnvelope struct {
	Data       any             `json:"data"`
	Attributes clerkAttributes `json:"event_attributes"`
	InstanceID string          `json:"instance_id"`
	Object     string          `json:"object"`
	Timestamp  int64           `json:"timestamp"`
	Type       string          `json:"type"`
}

type clerkAttributes struct {
	HTTPRequest clerkHTTPRequest `json:"http_request"`
}

type clerkHTTPRequest struct {
	ClientIP  string `json:"client_ip"`
	UserAgent string `json:"user_agent"`
}

type clerkDeleted struct {
	Deleted bool   `json:"deleted"`
	ID      string `json:"id"`
	Object  string `json:"object"`
}

type clerkUserJSON struct {
	BackupCodeEnabled         bool             `json:"backup_code_enabled"`
	Banned                    bool             `json:"banned"`
	CreateOrganizationEnabled bool             `json:"create_organization_enabled"`
	CreatedAt                 int64            `json:"created_at"`
	DeleteSelfEnabled         bool             `json:"delete_self_enabled"`
	EmailAddresses            []clerkEmailJSON `json:"email_addresses"`
	ExternalAccounts          []any            `json:"external_accounts"`
	ExternalID                string           `json:"external_id"`
	FirstName                 string           `json:"first_name"`
	HasImage                  bool             `json:"has_image"`
	ID                        string           `json:"id"`
	ImageURL                  string           `json:"image_url"`
	LastActiveAt              int64            `json:"last_active_at"`
	LastName                  string           `json:"last_name"`
	LastSignInAt              int64            `json:"last_sign_in_at"`
	LegalAcceptedAt           *int64           `json:"legal_accepted_at"`
	Locale                    *string          `json:"locale"`
	Locked                    bool             `json:"locked"`
	Object                    string           `json:"object"`
	PasswordEnabled           bool             `json:"password_enabled"`
	PhoneNumbers              []any            `json:"phone_numbers"`
	PrimaryEmailAddressID     string           `json:"primary_email_address_id"`
	PrimaryPhoneNumberID      *string          `json:"primary_phone_number_id"`
	PrimaryWeb3WalletID       *string          `json:"primary_web3_wallet_id"`
	PrivateMetadata           map[string]any   `json:"private_metadata"`
	PublicMetadata            map[string]any   `json:"public_metadata"`
	SamlAccounts              []any            `json:"saml_accounts"`
	TotpEnabled               bool             `json:"totp_enabled"`
	TwoFactorEnabled          bool             `json:"two_factor_enabled"`
	UnsafeMetadata            map[string]any   `json:"unsafe_metadata"`
	UpdatedAt                 int64            `json:"updated_at"`
	Username                  string           `json:"username"`
	Web3Wallets               []any            `json:"web3_wallets"`
}

type clerkEmailJSON struct {
	EmailAddress string            `json:"email_address"`
	ID           string            `json:"id"`
	LinkedTo     []any             `json:"linked_to"`
	Object       string            `json:"object"`
	Verification clerkVerification `json:"verification"`
}

type clerkVerification struct {
	Status   string `json:"status"`
	Strategy string `json:"strategy"`
}
