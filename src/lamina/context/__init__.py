"""Build contexts (local directories; remote schemes later) with .dockerignore applied."""
