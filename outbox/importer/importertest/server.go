package importertest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
)

// Fault may answer the n-th request (1-based) itself, instead of the fake;
// it reports whether it did.
type Fault func(n int, w http.ResponseWriter, r *http.Request) bool

// Server is a fake provider API. Its users are kept in the order of their
// creation; each provider's handler lists them the way its API does.
type Server struct {
	*httptest.Server

	mu       sync.Mutex
	users    []user
	hidden   map[string]bool
	requests int
	paths    []string
	fault    Fault
}

// user is one user object and the id it carries.
type user struct {
	id  string
	obj json.RawMessage
}

func newServer(t testing.TB, handle func(s *Server, w http.ResponseWriter, r *http.Request)) *Server {
	s := &Server{hidden: map[string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests++
		n, fault := s.requests, s.fault
		s.paths = append(s.paths, r.URL.RequestURI())
		s.mu.Unlock()
		if fault != nil && fault(n, w, r) {
			return
		}
		if r.Method != http.MethodGet {
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"message": "method not allowed"})
			return
		}
		handle(s, w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// SetUsers replaces the users, given oldest first. Each must be a JSON
// object with a string "id".
func (s *Server) SetUsers(objs ...json.RawMessage) {
	users := make([]user, len(objs))
	for i, o := range objs {
		var v struct{ ID string }
		if err := json.Unmarshal(o, &v); err != nil || v.ID == "" {
			panic("importertest: a user object needs a string id: " + string(o))
		}
		users[i] = user{id: v.ID, obj: o}
	}
	s.mu.Lock()
	s.users = users
	s.mu.Unlock()
}

// Hide leaves the user out of listings while a look-up by id still finds
// it, as when a listing skips a user.
func (s *Server) Hide(id string) {
	s.mu.Lock()
	s.hidden[id] = true
	s.mu.Unlock()
}

// SetFault installs f for the requests to come; nil removes it.
func (s *Server) SetFault(f Fault) {
	s.mu.Lock()
	s.fault = f
	s.mu.Unlock()
}

// Requests is the number of requests received so far.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

// Paths are the request URIs received so far, in order.
func (s *Server) Paths() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.paths...)
}

// listed returns the users a listing shows, oldest first.
func (s *Server) listed() []user {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]user, 0, len(s.users))
	for _, u := range s.users {
		if !s.hidden[u.id] {
			out = append(out, u)
		}
	}
	return out
}

// find returns the user with this id.
func (s *Server) find(id string) (json.RawMessage, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range s.users {
		if u.id == id {
			return u.obj, true
		}
	}
	return nil, false
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// intParam reads an integer query parameter: def when absent, ok false when
// it is not an integer in [lo, hi].
func intParam(r *http.Request, name string, def, lo, hi int) (int, bool) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, true
	}
	n, err := strconv.Atoi(v)
	return n, err == nil && n >= lo && n <= hi
}

func reversed(us []user) []user {
	out := make([]user, len(us))
	for i, u := range us {
		out[len(us)-1-i] = u
	}
	return out
}

func objects(us []user) []json.RawMessage {
	out := make([]json.RawMessage, len(us))
	for i, u := range us {
		out[i] = u.obj
	}
	return out
}
