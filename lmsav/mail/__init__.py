"""Mail policy: groups, content filter, cure and warnings, notices, backup, and the mail
service every front end asks (``service.MailService.decide``)."""
