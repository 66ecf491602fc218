"""landpipe: survey deliveries of cadastral parcels into a PostGIS land register."""

__version__ = "0.1.0"
