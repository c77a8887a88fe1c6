package registryapi

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"

	"github.com/confine-project/mgmtnet/registrydb"
)

// TokenAuthPath is where a user trades a name and a password for a token,
// as at the 2015 controller (Django REST framework's obtain_auth_token).
const TokenAuthPath = "/api-token-auth/"

// maxLogins bounds the password checks that run at once: each costs about
// 0.3 s of a core (PBKDF2), and more requests wait for their turn rather
// than take the machine.
const maxLogins = 2

// login serves POST /api-token-auth/ with username and password, as a
// form or a JSON object: {"token": "<key>"}, a new token of the user's
// role; bad credentials get the framework's 400.
func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	var creds struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	body := io.LimitReader(r.Body, maxBody)
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/json":
		if err := json.NewDecoder(body).Decode(&creds); err != nil {
			detail(w, http.StatusBadRequest, "JSON parse error - "+err.Error())
			return
		}
	default:
		b, err := io.ReadAll(body)
		if err != nil {
			detail(w, http.StatusBadRequest, "read the body: "+err.Error())
			return
		}
		q, err := url.ParseQuery(string(b))
		if err != nil {
			detail(w, http.StatusBadRequest, "want a form of username and password: "+err.Error())
			return
		}
		creds.Username, creds.Password = q.Get("username"), q.Get("password")
	}
	missing := map[string][]string{}
	if creds.Username == "" {
		missing["username"] = []string{"This field is required."}
	}
	if creds.Password == "" {
		missing["password"] = []string{"This field is required."}
	}
	if len(missing) > 0 {
		writeJSON(w, http.StatusBadRequest, missing)
		return
	}
	select {
	case h.logins <- struct{}{}:
		defer func() { <-h.logins }()
	case <-r.Context().Done():
		return
	}
	key, err := h.db.Login(r.Context(), creds.Username, creds.Password)
	switch {
	case errors.Is(err, registrydb.ErrBadLogin):
		h.log.Warn("registry login refused", "user", creds.Username, "remote", r.RemoteAddr)
		writeJSON(w, http.StatusBadRequest, map[string][]string{"non_field_errors": {"Unable to login with provided credentials."}})
		return
	case err != nil:
		h.log.Warn("registry login failed", "user", creds.Username, "err", err)
		detail(w, http.StatusInternalServerError, "The login failed; the registry's log says why.")
		return
	}
	h.log.Info("registry login", "user", creds.Username, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]string{"token": key})
}
