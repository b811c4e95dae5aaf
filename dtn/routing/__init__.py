"""Contact plans and Contact Graph Routing (after CCSDS SABR 734.3-B-1). Sans-I/O."""
