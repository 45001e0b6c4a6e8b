"""Exchange rates of assets in fiat currencies (SPEC §15): sources, and the cached quotes that
payments priced in fiat lock."""
