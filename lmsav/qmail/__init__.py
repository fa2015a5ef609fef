"""lmsav-qmail-queue, the qmail-queue replacement (a front end of the mail service), and
`lmsav setup qmail`."""
