"""`lmsav setup`: the post-installation script that turns a server with an MTA into one whose
mail lmsav checks (account, directories, configuration, database, schedules, services, log
rotation, MTA changes, self-test), and `lmsav setup --remove`, which undoes it from the manifest
of every change it made."""
