package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"

	"github.com/pyexec/pyexec/internal/packages"
	"github.com/pyexec/pyexec/internal/pyreq"
	"github.com/pyexec/pyexec/pkg/api"
)

// PackageManager installs packages into the packages dir (packages.Installer).
type PackageManager interface {
	State() (api.Packages, error)
	Install(ctx context.Context, reqs []pyreq.Requirement, upgrade bool) (api.Packages, error)
}

// SetPackages enables /v1/packages with the installer and the run-time install policy.
func (s *Server) SetPackages(pm PackageManager, policy packages.Policy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pkgs, s.policy = pm, policy
}

func (s *Server) packageManager() (PackageManager, packages.Policy) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pkgs, s.policy
}

// handleListPackages serves GET /v1/packages: the current tree and what is installed in it.
func (s *Server) handleListPackages(w http.ResponseWriter, r *http.Request) {
	pm, policy := s.packageManager()
	if pm == nil {
		s.writeError(w, r, http.StatusServiceUnavailable, api.ErrCodeUnavailable, "/v1/packages: no packages dir is configured")
		return
	}
	st, err := pm.State()
	if err != nil {
		s.writeError(w, r, http.StatusInternalServerError, api.ErrCodeInternal, "packages: "+err.Error())
		return
	}
	st.Allowed = policy.Patterns()
	writeJSON(w, http.StatusOK, st)
}

// handleInstallPackages serves POST /v1/packages: check every requirement and the policy,
// then install (serialised with other installs by the installer's lock).
func (s *Server) handleInstallPackages(w http.ResponseWriter, r *http.Request) {
	pm, policy := s.packageManager()
	if pm == nil {
		s.writeError(w, r, http.StatusServiceUnavailable, api.ErrCodeUnavailable, "/v1/packages: no packages dir is configured")
		return
	}
	body, rerr := readJSON[api.PackagesRequest](w, r, s.cfg.Limits.MaxRequestBytes)
	if rerr != nil {
		s.writeRequestError(w, r, rerr)
		return
	}
	if len(body.Packages) == 0 {
		s.writeRequestError(w, r, badRequest("packages: missing or empty; want a list of requirements such as pandas>=2"))
		return
	}
	reqs := make([]pyreq.Requirement, 0, len(body.Packages))
	for i, spec := range body.Packages {
		req, err := pyreq.ParseRequirement(spec)
		if err != nil {
			s.writeRequestError(w, r, badRequest("packages[%d]: %v", i, err))
			return
		}
		reqs = append(reqs, req)
	}
	if err := policy.Check(reqs); err != nil {
		s.writeError(w, r, http.StatusForbidden, api.ErrCodeForbidden, err.Error())
		return
	}
	if !s.begin() {
		s.writeError(w, r, http.StatusServiceUnavailable, api.ErrCodeUnavailable, drainingMessage)
		return
	}
	defer s.end()
	ctx, done := s.track(r.Context())
	defer done()

	log := logr.FromContextOrDiscard(r.Context())
	start := time.Now()
	st, err := pm.Install(ctx, reqs, body.Upgrade)
	elapsed := time.Since(start)
	var ie *packages.InstallError
	switch {
	case err == nil:
		log.Info("packages installed", "packages", body.Packages, "upgrade", body.Upgrade, "durationMs", float64(elapsed.Microseconds())/1000, "tree", st.Tree)
		st.Allowed = policy.Patterns()
		st.DurationMS = float64(elapsed.Microseconds()) / 1000
		writeJSON(w, http.StatusOK, st)
	case errors.Is(err, packages.ErrLocked):
		log.Error(err, "packages not installed", "packages", body.Packages)
		s.writeError(w, r, http.StatusConflict, api.ErrCodePackagesLocked, err.Error())
	case errors.As(err, &ie):
		log.Error(err, "packages not installed", "packages", body.Packages)
		s.writeError(w, r, http.StatusUnprocessableEntity, api.ErrCodeInstallFailed, fmt.Sprintf("installing %v: %v", body.Packages, err))
	case errors.Is(err, packages.ErrBusy):
		s.writeError(w, r, http.StatusServiceUnavailable, api.ErrCodeUnavailable, err.Error())
	default:
		log.Error(err, "packages not installed", "packages", body.Packages)
		s.writeError(w, r, http.StatusInternalServerError, api.ErrCodeInternal, err.Error())
	}
}
