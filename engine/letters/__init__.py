"""What a partner's letter says and how it is written.

:func:`letter_facts` gathers what a letter can say (unformatted);
:func:`renderer_for` renders it from the Jinja2 templates in the sandbox, in
the partner's language; :func:`email_message` makes it an email;
:func:`check_templates` renders every template before a run;
:class:`MailServer` hands one message to an SMTP server. Writing the
letters of a whole run is :func:`engine.run.write_letters`, and sending
them :func:`engine.run.send_letters`.
"""

from engine.letters.emails import email_message
from engine.letters.facts import KINDS, LetterFacts, letter_facts
from engine.letters.rendering import Letter, LetterRenderer, renderer_for
from engine.letters.settings import LetterSettings, load_letter_settings
from engine.letters.smtp import MailServer, ServerOptions
from engine.letters.template_check import check_templates

__all__ = [
    "KINDS",
    "Letter",
    "LetterFacts",
    "LetterRenderer",
    "LetterSettings",
    "MailServer",
    "ServerOptions",
    "check_templates",
    "email_message",
    "letter_facts",
    "load_letter_settings",
    "renderer_for",
]
