"""Alembic environment: migrations run on the connection ``seglab.serve.schema`` hands in."""

from alembic import context

from seglab.serve.store import Base

connection = context.config.attributes["connection"]
# render_as_batch: SQLite alters tables by copying them; Alembic's batch mode does that.
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
