"""Prefect flows. They only wire landpipe's plain functions together: a task body calls one."""
