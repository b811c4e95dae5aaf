"""crypto: identities, certificates, revocation, replay windows. Imports nothing of ours."""
