"""Alembic's environment for the catalog: run on the connection the caller hands over.

LETL runs it from code (letl.lake.migrations.upgrade), inside the caller's transaction and lock;
`alembic` on the command line is not needed. Batch mode lets SQLite take the ALTERs it lacks.
"""

from alembic import context

from letl.lake.catalog_schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
