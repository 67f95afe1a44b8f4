"""Search and visit tools: ``text_search``, ``image_search`` and ``web_visit`` (R1V4).

Each tool talks to a provider behind one interface per tool kind (``providers``), chosen by
the tool's ``provider`` setting:

- offline (the default): the generated local corpus (``corpus``), its SQLite FTS5 text index
  (``text_index``), its multi-scale perceptual-hash image index (``image_index``), and its
  pages for ``web_visit``;
- online: Serper (Google search and Lens) and Brave Search (``serper``, ``brave``) over one
  small HTTP client with rate limiting and retries (``http_api``), and a safe HTTP fetcher for
  ``web_visit`` (``http_pages`` with the SSRF guard ``netguard``).

Results of online providers are cached by normalised request (``cache``). ``web_visit`` can
summarise a page for the call's ``goal`` through the model server (``summary``). See
``docs/tools.md`` for the settings.
"""
