"""Application services shared by the CLI and the API: submitting and inspecting runs."""
