"""All SQL of mailshift: one module per table family, the schema migrations, the connection.

The rest of the core calls these functions and never writes SQL itself."""
