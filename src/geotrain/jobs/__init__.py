"""The job queue: tables, the database, and every SQL statement of the job lifecycle."""
