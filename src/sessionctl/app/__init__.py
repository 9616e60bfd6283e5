"""The application around the domain: config, context, operations, audit, schedule, hooks, locks."""
