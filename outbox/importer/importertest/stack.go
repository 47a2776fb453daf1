package importertest

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

// NewStack fakes Stack Auth's server API, after
// apps/backend/src/app/api/latest/users/crud.tsx: GET /api/v1/users?limit&cursor&order_by&desc&include_anonymous
// answers {items, is_paginated, pagination: {next_cursor}}, oldest sign-up
// first. The cursor is the id of the first user of the page (Prisma's
// inclusive cursor); next_cursor is the id of the user after the page, null
// after the last. A cursor naming no user answers an empty page, as Prisma
// does. Anonymous users are listed only with include_anonymous=true.
// GET /api/v1/users/{id} answers one or 404 USER_NOT_FOUND. Requests need
// the x-stack-access-type: server, x-stack-project-id and
// x-stack-secret-server-key headers.
func NewStack(t testing.TB, projectID, serverKey string) *Server {
	return newServer(t, func(s *Server, w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("x-stack-access-type") != "server" || r.Header.Get("x-stack-project-id") != projectID ||
			r.Header.Get("x-stack-secret-server-key") != serverKey {
			stackError(w, http.StatusUnauthorized, "INVALID_SECRET_SERVER_KEY", "The secret server key is not valid for the project. Does the project and/or the key exist?")
			return
		}
		if id, ok := strings.CutPrefix(r.URL.Path, "/api/v1/users/"); ok {
			if obj, found := s.find(id); found {
				writeJSON(w, http.StatusOK, obj)
				return
			}
			stackError(w, http.StatusNotFound, "USER_NOT_FOUND", "User not found.")
			return
		}
		if r.URL.Path != "/api/v1/users" {
			stackError(w, http.StatusNotFound, "ROUTE_NOT_FOUND", "not found")
			return
		}
		q := r.URL.Query()
		limit, ok := intParam(r, "limit", 1<<31, 1, 1<<31)
		if !ok || (q.Get("order_by") != "" && q.Get("order_by") != "signed_up_at") {
			stackError(w, http.StatusBadRequest, "SCHEMA_ERROR", "Request validation failed on GET /api/v1/users")
			return
		}
		var users []user
		for _, u := range s.listed() {
			var v struct {
				IsAnonymous bool `json:"is_anonymous"`
			}
			_ = json.Unmarshal(u.obj, &v)
			if !v.IsAnonymous || q.Get("include_anonymous") == "true" {
				users = append(users, u)
			}
		}
		if q.Get("desc") == "true" {
			users = reversed(users)
		}
		if cursor := q.Get("cursor"); cursor != "" {
			start := len(users) // a vanished cursor: nothing
			for i, u := range users {
				if u.id == cursor {
					start = i
				}
			}
			users = users[start:]
		}
		var next any
		if len(users) > limit {
			next = users[limit].id
			users = users[:limit]
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"items": objects(users), "is_paginated": true, "pagination": map[string]any{"next_cursor": next},
		})
	})
}

func stackError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("X-Stack-Known-Error", code)
	writeJSON(w, status, map[string]string{"code": code, "error": message})
}

// StackUser is a Stack Auth user (usersCrudServerReadSchema of
// packages/stack-shared/src/interface/crud/users.ts), with no update time.
func StackUser(id, displayName, email string, signedUp time.Time, anonymous bool) json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"id": id, "display_name": displayName, "primary_email": email,
		"primary_email_verified": true, "primary_email_auth_enabled": true,
		"profile_image_url": nil, "signed_up_at_millis": signedUp.UnixMilli(),
		"client_metadata": map[string]any{}, "client_read_only_metadata": map[string]any{}, "server_metadata": map[string]any{},
		"has_password": true, "otp_auth_enabled": false, "auth_with_email": true, "requires_totp_mfa": false,
		"passkey_auth_enabled": false, "oauth_providers": []any{}, "selected_team_id": nil, "selected_team": nil,
		"last_active_at_millis": signedUp.UnixMilli(), "is_anonymous": anonymous,
	})
	return b
}
