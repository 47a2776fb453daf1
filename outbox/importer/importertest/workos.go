package importertest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// NewWorkOS fakes WorkOS User Management (https://workos.com/docs/reference/authkit/user
// and .../reference/pagination): GET /user_management/users?limit&order&after&before
// answers {object: "list", data, list_metadata: {before, after}}, newest
// first by default (order=asc for oldest first), limit 1 to 100 (default
// 10); list_metadata.after is the last id of the page when more follow,
// else null, and ?after= resumes after that id. GET
// /user_management/users/{id} answers one or 404. Requests need
// "Authorization: Bearer <apiKey>".
func NewWorkOS(t testing.TB, apiKey string) *Server {
	return newServer(t, func(s *Server, w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+apiKey {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Unauthorized"})
			return
		}
		if id, ok := strings.CutPrefix(r.URL.Path, "/user_management/users/"); ok {
			if obj, found := s.find(id); found {
				writeJSON(w, http.StatusOK, obj)
				return
			}
			writeJSON(w, http.StatusNotFound, map[string]string{"code": "entity_not_found", "message": "User not found: '" + id + "'."})
			return
		}
		if r.URL.Path != "/user_management/users" {
			writeJSON(w, http.StatusNotFound, map[string]string{"message": "Not Found"})
			return
		}
		q := r.URL.Query()
		limit, ok := intParam(r, "limit", 10, 1, 100)
		if !ok || q.Get("before") != "" {
			writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"code": "invalid_request_parameters", "message": "Validation failed"})
			return
		}
		users := s.listed()
		switch q.Get("order") {
		case "asc":
		case "", "desc", "normal":
			users = reversed(users)
		default:
			writeJSON(w, http.StatusUnprocessableEntity, map[string]any{"code": "invalid_request_parameters", "message": "order must be asc or desc"})
			return
		}
		if after := q.Get("after"); after != "" {
			for i, u := range users {
				if u.id == after {
					users = users[i+1:]
					break
				}
			}
		}
		var next any
		if len(users) > limit {
			users = users[:limit]
			next = users[limit-1].id
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"object": "list", "data": objects(users), "list_metadata": map[string]any{"before": nil, "after": next},
		})
	})
}

// WorkOSUser is a WorkOS user (workos-node UserResponse), ISO 8601 times.
func WorkOSUser(id, first, last, email string, created, updated time.Time) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"object": "user", "id": id, "email": email, "email_verified": true,
		"first_name": first, "last_name": last, "profile_picture_url": nil, "last_sign_in_at": nil,
		"external_id": nil, "metadata": map[string]string{},
		"created_at": created.UTC().Format("2006-01-02T15:04:05.000Z"), "updated_at": updated.UTC().Format("2006-01-02T15:04:05.000Z"),
	})
	return b
}
