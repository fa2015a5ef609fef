"""lmsav milter: the mail policy before the queue for Postfix and Sendmail (milter protocol v6)."""
